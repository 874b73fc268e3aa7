"""Progress bars appear only where someone waits: more than one step, and not in kept executed copies."""

import pytest

from psyche_utils.progress import bars_disabled, progress


@pytest.fixture(autouse=True)
def bars_allowed(monkeypatch):
    monkeypatch.delenv("TQDM_DISABLE", raising=False)


def test_one_step_shows_no_bar():
    assert progress([1], desc="x").disable is True
    assert progress(total=1, desc="x").disable is True


def test_several_steps_show_a_bar_unless_asked_not_to():
    assert progress([1, 2, 3], desc="x").disable is False
    assert progress([1, 2, 3], desc="x", show=False).disable is True


@pytest.mark.parametrize(("value", "disabled"), [("1", True), ("true", True), ("0", False), ("", False)])
def test_the_environment_switch(monkeypatch, value, disabled):
    monkeypatch.setenv("TQDM_DISABLE", value)
    assert bars_disabled() is disabled
    assert progress([1, 2, 3], desc="x").disable is disabled


def test_a_generator_without_length_still_shows():
    assert progress((i for i in range(3)), desc="x").disable is False
