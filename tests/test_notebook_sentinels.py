import json
import time

import pytest

from psyche_utils.notebook import check_sentinels, main, start


def test_start_writes_sentinel(tmp_path, monkeypatch):
    monkeypatch.setenv("PSYCHE_OUTPUTS", str(tmp_path))
    profile = start("99_demo", "tiny", seed=1)
    record = json.loads((tmp_path / "runs" / "99_demo.json").read_text())
    assert profile.name == "tiny" and record["profile"] == "tiny" and record["seed"] == 1


def test_check_sentinels(tmp_path, monkeypatch):
    monkeypatch.setenv("PSYCHE_OUTPUTS", str(tmp_path))
    before = time.time() - 1
    start("01_ran", "tiny")
    notebooks = [tmp_path / "01_ran.ipynb", tmp_path / "02_skipped.ipynb"]
    problems = check_sentinels(notebooks, "tiny", before)
    assert len(problems) == 1 and problems[0].startswith("02_skipped.ipynb: no sentinel")
    assert "older than this run" in check_sentinels(notebooks[:1], "tiny", time.time() + 10)[0]
    assert "expected 'qlora'" in check_sentinels(notebooks[:1], "qlora", before)[0]


def test_nothing_ran_is_a_failure():
    assert check_sentinels([], "tiny", 0.0) == ["no notebooks were found to check: nothing ran"]


def test_cli_fails_on_stale_sentinels(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PSYCHE_OUTPUTS", str(tmp_path))
    assert main(["check-sentinels", "--profile", "tiny", "--since", str(time.time() + 60)]) == 1
    assert "[FAIL]" in capsys.readouterr().out
