"""Progress bars where a person is waiting, and none where nobody watches them.

A bar over a single chunk only flickers, and in an executed notebook opened later (the HTML
edition, a static viewer) a live widget is saved as a frozen "0%| 0/1". So a bar is shown only
for more than one step, and never when ``TQDM_DISABLE`` is set, which ``make tutorial`` and
``make test`` do for the copies they keep.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any

from tqdm.auto import tqdm


def bars_disabled() -> bool:
    """True when the environment asks for no progress bars (tqdm's own switch, honoured in kernels too)."""
    return os.environ.get("TQDM_DISABLE", "").strip().lower() not in ("", "0", "false")


def progress(iterable: Iterable[Any] | None = None, *, desc: str, total: int | None = None, show: bool = True, **kwargs: Any) -> tqdm:
    """A tqdm bar over ``iterable`` (or of ``total`` steps) shown only when it is worth watching."""
    steps = total if total is not None else (len(iterable) if hasattr(iterable, "__len__") else None)  # type: ignore[arg-type]
    hidden = not show or bars_disabled() or (steps is not None and steps <= 1)
    return tqdm(iterable, desc=desc, total=total, disable=hidden, **kwargs)
