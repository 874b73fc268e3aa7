"""``python -m psyche_utils.evaluation``: items, score and submission, including bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from psyche_utils.evaluation import load_cpsyexam, load_pceb
from psyche_utils.evaluation.cli import main
from psyche_utils.evaluation.prompts import choice_prompt, essay_prompt
from psyche_utils.paths import EVAL_DATA_DIR, REPO_ROOT

PCEB = EVAL_DATA_DIR / "pceb"
CPSY = EVAL_DATA_DIR / "cpsyexam"
PAPER_COLUMNS = ["Case S", "Case M", "Case Me", "Moral S", "Moral M", "Moral Me", "Theory S", "Theory M",
                 "Theory Me", "Avg", "Avg'", "R-1", "R-L", "B-4"]


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def _write_jsonl(path: Path, records: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r, ensure_ascii=False)) + "\n" for r in records),
                    encoding="utf-8")
    return path


def _error(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ")
    return err[0]


def test_items_writes_the_notebook_prompts(tmp_path):
    out = tmp_path / "items.jsonl"
    assert main(["items", "--benchmark", "pceb", "--data", str(PCEB), "--out", str(out)]) == 0
    records = _lines(out)
    pceb = load_pceb(PCEB)
    assert [r["id"] for r in records] == [item.id for item in pceb] and len(records) == 44
    by_id = {item.id: item for item in pceb}
    for record in records:
        item = by_id[record["id"]]
        expected = essay_prompt(item) if item.question_type == "essay" else choice_prompt(item)
        assert record["messages"] == expected
    empty = next(r for r in records if r.get("gold_problem"))
    assert empty["answer"] == "" and empty["official_answer"] == ""
    out5 = tmp_path / "cpsy.jsonl"
    assert main(["items", "--benchmark", "cpsyexam", "--data", str(CPSY), "--split", "test", "--shots", "5",
                 "--out", str(out5)]) == 0
    records = _lines(out5)
    assert len(records) == 4 and all(len(r["messages"]) == 12 and r["n_shot"] == 5 for r in records)
    assert main(["items", "--benchmark", "psydt", "--data", str(EVAL_DATA_DIR / "soulchat"), "--out", str(out)]) == 0
    assert len(_lines(out)) == 12 and all("reference" in r for r in _lines(out))


def _tiny_pceb(tmp_path: Path) -> Path:
    root = tmp_path / "pceb"
    options = {"A": "甲", "B": "乙", "C": "丙", "D": "丁"}
    single = [{"id": i, "question": f"单{i}", "options": options, "answer": a} for i, a in enumerate("ABC", 1)]
    multi = [{"id": i, "question": f"多{i}", "options": options, "answer": a} for i, a in enumerate(["AC", "ABD"], 1)]
    for rel, records in (("theory/single/second/s.json", single), ("theory/multiple/second/m.json", multi)):
        (root / rel).parent.mkdir(parents=True)
        (root / rel).write_text(json.dumps(records, ensure_ascii=False), encoding="utf-8")
    return root


def test_score_json_by_hand(tmp_path, capsys):
    root = _tiny_pceb(tmp_path)
    ids = [item.id for item in load_pceb(root)]     # m.json #1, #2, then s.json #1..#3
    replies = _write_jsonl(tmp_path / "p.jsonl", [
        {"id": ids[0], "reply": "<think>B 不对</think>答案：A"},      # multi AC: partial 1/2 (official and strict)
        {"id": ids[1], "reply": "答案：ABD"},                         # multi ABD: complete
        {"id": ids[2], "reply": "答案：A"},                           # single A: right
        {"id": ids[3], "reply": "<think>想想</think>答案：C"},        # single B: wrong
        {"id": ids[4], "reply": "不知道"},                            # single C: unanswered
    ])
    args = ["score", "--benchmark", "pceb", "--data", str(root), "--predictions", str(replies), "--json"]
    assert main([*args, "--convention", "official"]) == 0
    official = json.loads(capsys.readouterr().out)
    assert set(PAPER_COLUMNS) <= set(official) and official["convention"] == "official"
    assert official["n"] == 5 and official["answered"] == 4
    # single: "不知道" is "E", missing, left out: 1 right of the 2 answered -> 50
    assert official["Theory S"] == pytest.approx(50.0)
    # multi: both answered; complete 1 of 2 -> 50; elastic (1/2 + 1)/2 -> 75
    assert official["Theory M"] == pytest.approx(50.0) and official["Theory Me"] == pytest.approx(75.0)
    assert official["Case S"] is None and official["Avg"] is None        # no case items: NaN -> null
    assert official["counts"]["Theory S"] == {"counted": 2, "answered": 2, "total": 3}
    assert main([*args, "--convention", "official-2024"]) == 0
    older = json.loads(capsys.readouterr().out)
    # commit 1534ad3: "E" is wrong and counted: 1 right of all 3 single -> 100/3; multi reads "A" ([ABCD]+$)
    # and "ABD" as above -> 50 and 75
    assert older["convention"] == "official-2024" and older["Theory S"] == pytest.approx(100 / 3)
    assert older["Theory M"] == pytest.approx(50.0) and older["Theory Me"] == pytest.approx(75.0)
    assert older["counts"]["Theory S"] == {"counted": 3, "answered": 2, "total": 3}
    assert main([*args, "--convention", "strict"]) == 0
    strict = json.loads(capsys.readouterr().out)
    assert strict["Theory S"] == pytest.approx(100 / 3) and strict["answered"] == 4


def test_score_the_fixture_replies_under_each_convention(capsys):
    replies = PCEB / "example_replies.jsonl"
    results = {}
    for convention in ("official", "official-after-think", "official-2024", "strict"):
        assert main(["score", "--benchmark", "pceb", "--data", str(PCEB), "--predictions", str(replies),
                     "--convention", convention, "--json"]) == 0
        results[convention] = json.loads(capsys.readouterr().out)
    official = results["official"]
    choice_ids = {item.id for item in load_pceb(PCEB) if item.question_type != "essay"}
    no_letter = [r for r in _lines(replies) if r["id"] in choice_ids and not any(ch in r["reply"] for ch in "ABCD")]
    # the official reader finds an answer in every choice reply that has an A-D letter anywhere
    assert official["n"] == 40 and official["n"] - official["answered"] == len(no_letter) == 7
    assert results["official-after-think"]["answered"] < official["answered"]
    # official counts only the answered items of each column, official-2024 every item
    assert all(c["counted"] == c["answered"] for c in official["counts"].values())
    assert all(c["counted"] == c["total"] for c in results["official-2024"]["counts"].values())
    assert results["strict"]["n"] == 39 and results["strict"]["skipped"]        # the empty gold is not scored
    # one essay reply is a think block only: empty after </think>, not empty as a whole reply
    assert official["essays"] == {"n": 4, "empty": 0}
    assert results["strict"]["essays"] == results["official-after-think"]["essays"] == {"n": 4, "empty": 1}
    for result in results.values():
        assert set(PAPER_COLUMNS) <= set(result)


def test_score_table_says_the_convention_and_counts(capsys):
    assert main(["score", "--benchmark", "cpsyexam", "--data", str(CPSY), "--predictions",
                 str(CPSY / "example_replies_dev.jsonl"), "--convention", "strict"]) == 0
    out = capsys.readouterr().out
    assert "'strict' convention" in out and "answered" in out and "MCQA" in out
    assert "CA-心理咨询-单项选择题" in out


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        (['{"id": "X", "reply": "A"}', "{broken"], "line 2"),
        (['{"id": "nope", "reply": "A"}'], "line 1 [id nope]: no such item"),
        (['{"id": "ID0", "reply": 3}'], "field 'reply'"),
        (['{"id": "ID0", "reply": "A"}', '{"id": "ID0", "reply": "B"}'], "duplicate id"),
        (['{"reply": "A"}'], "field 'id'"),
    ],
)
def test_score_bad_predictions_name_the_line(tmp_path, capsys, lines, message):
    first = load_pceb(PCEB)[0].id
    path = _write_jsonl(tmp_path / "p.jsonl", [line.replace('"ID0"', json.dumps(first)).replace('"X"', json.dumps(first))
                                               for line in lines])
    code = main(["score", "--benchmark", "pceb", "--data", str(PCEB), "--predictions", str(path)])
    assert code == 2
    assert message in _error(capsys)


def test_missing_replies_are_an_error_unless_allowed(tmp_path, capsys):
    items = load_cpsyexam(CPSY, "dev").items
    path = _write_jsonl(tmp_path / "p.jsonl", [{"id": item.id, "reply": f"答案：{item.answer}"} for item in items[1:]])
    args = ["score", "--benchmark", "cpsyexam", "--data", str(CPSY), "--predictions", str(path), "--json"]
    assert main(args) == 2
    error = _error(capsys)
    assert f"no reply for item {items[0].id}" in error and "--allow-missing" in error
    assert main([*args, "--allow-missing"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["missing_replies"] == 1 and summary["n"] == len(items) - 1
    assert main(["score", "--benchmark", "cpsyexam", "--data", str(CPSY), "--split", "test", "--predictions", str(path)]) == 2
    assert "submission" in _error(capsys)


def test_submission_layout(tmp_path, capsys):
    test = load_cpsyexam(CPSY, "test").items
    zero = _write_jsonl(tmp_path / "z.jsonl", [{"id": i.id, "reply": "<think>想</think>答案：B"} for i in test])
    five = _write_jsonl(tmp_path / "f.jsonl", [{"id": i.id, "reply": "答案：C、A" if n else "不知道"} for n, i in enumerate(test)])
    out = tmp_path / "submission.json"
    assert main(["submission", "--data", str(CPSY), "--zero-shot", str(zero), "--five-shot", str(five), "--out", str(out)]) == 0
    assert "1 unreadable" in capsys.readouterr().err
    submission = json.loads(out.read_text(encoding="utf-8"))
    assert list(submission) == ["zero_shot", "five_shot"]
    assert submission["zero_shot"]["KG-PCE-心理咨询师三级-单项选择题"] == [
        {"question_id": "31", "prediction": "B", "n_shot": 0}, {"question_id": "32", "prediction": "B", "n_shot": 0}]
    five_shot = [p for task in submission["five_shot"].values() for p in task]
    assert sorted(p["prediction"] for p in five_shot) == ["", "AC", "AC", "AC"] and {p["n_shot"] for p in five_shot} == {5}
    assert main(["submission", "--data", str(CPSY), "--zero-shot", str(zero), "--five-shot", str(tmp_path / "none.jsonl"),
                 "--out", str(out)]) == 2
    assert "none.jsonl: no such file" in _error(capsys)


def test_module_entry_point_exits_2_on_bad_input(tmp_path):
    path = _write_jsonl(tmp_path / "p.jsonl", ["[1, 2]"])
    run = subprocess.run([sys.executable, "-m", "psyche_utils.evaluation", "score", "--benchmark", "pceb", "--data", str(PCEB),
                          "--predictions", str(path)], capture_output=True, text=True, cwd=REPO_ROOT)
    assert run.returncode == 2 and run.stderr.strip().startswith("error: ") and len(run.stderr.strip().splitlines()) == 1
    assert "this is one JSON array, not JSON Lines" in run.stderr
