"""Wilson intervals, checked against values computed by hand from the formula."""

import pytest

from psyche_utils.stats import format_rate, wilson_interval


def test_wilson_seven_of_sixteen():
    # p = 0.4375, z^2/n = 0.2401: centre 0.5576/1.2401 = 0.4496, half-width 1.96*0.1383/1.2401 = 0.2186
    low, high = wilson_interval(7, 16)
    assert low == pytest.approx(0.2310, abs=5e-4)
    assert high == pytest.approx(0.6682, abs=5e-4)


def test_wilson_edges_stay_inside_zero_one():
    low, high = wilson_interval(0, 10)
    assert low == 0.0 and high == pytest.approx(3.8416 / 13.8416, abs=1e-9)  # z^2 / (n + z^2)
    low, high = wilson_interval(10, 10)
    assert high == 1.0 and low == pytest.approx(10 / 13.8416, abs=1e-9)


@pytest.mark.parametrize(("successes", "n"), [(1, 0), (-1, 5), (6, 5)])
def test_wilson_refuses_impossible_counts(successes, n):
    with pytest.raises(ValueError):
        wilson_interval(successes, n)


def test_format_rate():
    assert format_rate(7, 16) == "7/16 = 44% (95% CI 23-67%)"
