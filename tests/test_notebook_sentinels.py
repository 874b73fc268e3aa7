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


def test_check_passes_silently_and_names_a_failed_claim():
    from psyche_utils.notebook import check

    check("loss-falls", 0.5 < 2.0, "final loss below the first")
    with pytest.raises(AssertionError, match=r"^claim 'loss-falls' does not hold: final loss 2.1 >= first 2.0$"):
        check("loss-falls", 2.1 < 2.0, "final loss 2.1 >= first 2.0")
    with pytest.raises(AssertionError, match=r"^claim 'bare' does not hold$"):
        check("bare", False)


def test_say_displays_markdown(monkeypatch):
    import IPython.display

    from psyche_utils.notebook import say

    shown = []
    monkeypatch.setattr(IPython.display, "display", shown.append)
    say("The reward rose from **0.10** to **0.40** (n=16).")
    assert len(shown) == 1 and isinstance(shown[0], IPython.display.Markdown)
    assert shown[0].data == "The reward rose from **0.10** to **0.40** (n=16)."
