"""A small SFT data set in the exact shape notebook 02 writes, built in code for the tests.

Questions ask which psychologist proposed a theory; the assistant turn is a one-sentence
rationale in a think block, then the answer. Short replies keep the tiny training runs fast.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

from psyche_utils.formatting import final_answer_text
from psyche_utils.prompts import build_messages, format_choice_question, format_reasoned_reply

THEORIES = [
    ("经典条件反射", "巴甫洛夫"),
    ("操作性条件反射", "斯金纳"),
    ("认知失调理论", "费斯汀格"),
    ("需要层次理论", "马斯洛"),
    ("精神分析理论", "弗洛伊德"),
    ("来访者中心疗法", "罗杰斯"),
    ("合理情绪疗法", "艾利斯"),
    ("认知发展阶段理论", "皮亚杰"),
    ("依恋理论", "鲍尔比"),
    ("社会学习理论", "班杜拉"),
    ("习得性无助", "塞利格曼"),
    ("集体潜意识", "荣格"),
]


def fixture_records(count: int, seed: int = 0, prefix: str = "fx") -> list[dict[str, Any]]:
    """``count`` SFT question records, deterministic for a seed."""
    rng = random.Random(seed)
    people = [person for _, person in THEORIES]
    records = []
    for index in range(count):
        theory, person = THEORIES[index % len(THEORIES)]
        options = rng.sample([other for other in people if other != person], 3) + [person]
        rng.shuffle(options)
        letters = "ABCD"
        answer = letters[options.index(person)]
        question = format_choice_question(f"“{theory}”是由哪位心理学家提出的？", dict(zip(letters, options)), "single")
        messages = build_messages(question)
        messages.append(
            {"role": "assistant", "content": format_reasoned_reply(f"{theory}由{person}提出。", final_answer_text(answer))}
        )
        records.append(
            {
                "id": f"{prefix}-{index:03d}",
                "source": "question",
                "rationale_origin": "seed_explanation",
                "question_type": "single",
                "subject": "普通心理学",
                "messages": messages,
            }
        )
    return records


def write_fixture(path: Path, count: int, seed: int = 0) -> Path:
    """Write ``count`` records as JSON lines and return the path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in fixture_records(count, seed)), encoding="utf-8")
    return path


def fake_checkpoint(folder: Path, step: int = 1) -> Path:
    """A ``checkpoint-N`` folder with every file a resume reads (tiny, made-up tensors)."""
    import torch
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "trainer_state.json").write_text(json.dumps({"global_step": step}), encoding="utf-8")
    save_file({"weight": torch.arange(64, dtype=torch.float32)}, str(folder / "model.safetensors"))
    torch.save({"state": {}}, folder / "optimizer.pt")
    torch.save({"last_epoch": step}, folder / "scheduler.pt")
    return folder
