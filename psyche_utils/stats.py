"""Uncertainty for the small samples a tutorial run produces.

A rate of 7/16 is not "44%": it is anything from about a quarter to two thirds. Every rate the
notebooks print carries its n, and small samples carry a 95% Wilson score interval, which stays
inside [0, 1] and behaves at 0/n and n/n where the normal approximation does not.
"""

from __future__ import annotations

import math


def wilson_interval(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """The Wilson score interval for ``successes`` out of ``n`` (95% for the default z)."""
    if n <= 0:
        raise ValueError(f"n must be positive, got {n}")
    if not 0 <= successes <= n:
        raise ValueError(f"successes must be between 0 and n={n}, got {successes}")
    p = successes / n
    denominator = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half_width = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    return max(0.0, centre - half_width), min(1.0, centre + half_width)


def format_rate(successes: int, n: int) -> str:
    """A rate as the notebooks print it: "7/16 = 44% (95% CI 23-67%)"."""
    low, high = wilson_interval(successes, n)
    return f"{successes}/{n} = {successes / n:.0%} (95% CI {low * 100:.0f}-{high * 100:.0f}%)"
