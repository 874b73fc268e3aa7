"""What each safety layer catches, what it wrongly flags, and what it costs per turn on the CPU.

1. Quality: list versions 3-7 (3 as landed before normalisation, 7 current) on every safety set,
   each rate with n and a 95% Wilson interval. Which set is in-sample for which version is in
   data/eval/safety/README.md; the held-out figures are holdout_v2 for version 4, holdout_v3 for
   version 5, holdout_v4 for version 6 and holdout_v5 for version 7, each measured once.
2. Cost: microseconds per user turn for the keyword screen on the basic view only (version 3), with
   the folded view, with the pinyin view (version 7), and for the reply check; as ratios too.
3. Guard: with PSYCHE_GUARD_URL and PSYCHE_GUARD_MODEL set (Qwen3Guard-Gen served by vLLM), the
   keyword + guard recall and false positives on the held-out sets and the guard's time per turn.
   Without them the guard is reported as not available.

Run: python benchmarks/safety_screen.py [--repeats 20]
"""

from __future__ import annotations

import argparse
import copy
import time

from psyche_utils.llm import GenerationSettings, OpenAICompatibleBackend
from psyche_utils.safety import (
    RISK_EXPRESSIONS_PATH,
    SAFETY_CONFIG_DIR,
    Qwen3GuardClassifier,
    RiskScreen,
    SafetyReport,
    load_reply_set,
    load_risk_config,
    load_safety_set,
    screen_many,
)
from psyche_utils.safety.evaluation import REPLY_SPLITS, SAFETY_SPLITS, measure_lists


def per_turn_us(fn, texts: list[str], repeats: int) -> float:
    """Mean wall time of ``fn(text)`` per text, in microseconds (after one warm-up pass)."""
    for text in texts:
        fn(text)
    start = time.perf_counter()
    for _ in range(repeats):
        for text in texts:
            fn(text)
    return (time.perf_counter() - start) / (repeats * len(texts)) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()

    lists = {
        "v3": RiskScreen.from_file(SAFETY_CONFIG_DIR / "history" / "risk_expressions_v3.yaml"),
        "v4": RiskScreen.from_file(SAFETY_CONFIG_DIR / "history" / "risk_expressions_v4.yaml"),
        "v5": RiskScreen.from_file(SAFETY_CONFIG_DIR / "history" / "risk_expressions_v5.yaml"),
        "v6": RiskScreen.from_file(SAFETY_CONFIG_DIR / "history" / "risk_expressions_v6.yaml"),
        "v7": RiskScreen.from_file(RISK_EXPRESSIONS_PATH),
    }
    print("list  set                  measure                group            k/n     rate  95% CI")
    for row in measure_lists(lists):
        print(
            f"{row['list']:<5} {row['set']:<20} {row['measure']:<22} {row['group']:<15} {row['k']:>3}/{row['n']:<4}"
            f" {row['rate']:.2f}  {row['ci_low']:.2f}-{row['ci_high']:.2f}"
        )

    texts = [e.text for split in SAFETY_SPLITS for e in load_safety_set(split)]
    replies = [(e.text, e.reasoning) for split in REPLY_SPLITS for e in load_reply_set(split)]
    no_pinyin = copy.deepcopy(load_risk_config())
    no_pinyin["normalization"]["pinyin"] = False
    layers = {
        "keywords, basic view only (v3)": lists["v3"].screen,
        "keywords + folded view (v7, no pinyin)": RiskScreen(no_pinyin).screen,
        "keywords + folded + pinyin (v7, shipped)": lists["v7"].screen,
    }
    print(f"\ncost per user turn on the CPU ({len(texts)} turns x {args.repeats} repeats):")
    base = None
    for name, fn in layers.items():
        cost = per_turn_us(fn, texts, args.repeats)
        base = base or cost
        print(f"  {name:<42} {cost:8.1f} us/turn  ({cost / base:4.1f}x the basic screen)")
    reply_cost = per_turn_us(lambda pair: lists["v7"].screen_reply(*pair), replies, args.repeats)
    print(f"  {'reply check, answer + reasoning (v7)':<42} {reply_cost:8.1f} us/reply ({len(replies)} replies)")

    backend = OpenAICompatibleBackend.from_env("PSYCHE_GUARD_URL", "PSYCHE_GUARD_MODEL", "PSYCHE_GUARD_KEY")
    if backend is None:
        print("\nguard: not available (set PSYCHE_GUARD_URL and PSYCHE_GUARD_MODEL to a served Qwen3Guard-Gen)")
        return
    guard = Qwen3GuardClassifier(backend, GenerationSettings(max_new_tokens=32))
    for split in ("holdout_v2", "holdout_v3", "holdout_v4", "holdout_v5"):
        examples = load_safety_set(split)
        start = time.perf_counter()
        results = screen_many([e.text for e in examples], keyword_screen=lists["v7"].screen, classifier=guard)
        elapsed = time.perf_counter() - start
        report = SafetyReport(examples, results)
        print(f"\nkeywords + guard on {split} ({elapsed / len(examples) * 1e3:.0f} ms/turn, unparsed {guard.unparsed}):")
        for row in report.table():
            print(f"  {row['measure']:<22} {row['group']:<15} {row['k']:>3}/{row['n']:<4} {row['rate']:.2f}  {row['ci_low']:.2f}-{row['ci_high']:.2f}")


if __name__ == "__main__":
    main()
