"""The paper's PCEB table with our rows beside the published ones, and the result plots.

Every table names the scoring convention of its rows, and our accuracies carry their counts
(items counted, answered, total) and a 95% Wilson interval: on a handful of items a percentage
alone says almost nothing. Plots keep our rows in their own panel, apart from the published ones.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from psyche_utils.evaluation.conventions import Cell
from psyche_utils.evaluation.judge import DIMENSIONS
from psyche_utils.evaluation.metrics import PCEB_ACCURACY_COLUMNS, PCEB_COLUMNS
from psyche_utils.stats import wilson_interval

# Published PCEB results (percent) from the Psyche-R1 paper, in its column order.
PUBLISHED_PCEB = pd.DataFrame.from_dict(
    {
        "Qwen2.5-7B-Instruct": [47.57, 31.64, 47.49, 87.83, 59.50, 71.02, 78.46, 42.45, 55.17, 57.91, 64.59, 20.94, 11.28, 1.28],
        "Qwen2.5-72B-Instruct": [46.91, 40.34, 53.11, 90.79, 70.25, 78.48, 82.63, 47.63, 59.74, 63.09, 68.61, 21.43, 12.02, 1.16],
        "DeepSeek-R1": [79.25, 44.25, 60.86, 95.39, 68.99, 77.95, 92.19, 57.60, 69.41, 72.95, 79.18, 17.65, 9.19, 0.94],
        "GPT-4o": [65.63, 13.67, 34.53, 88.15, 33.54, 54.79, 74.65, 24.10, 45.07, 49.96, 60.47, 23.45, 12.75, 1.18],
        "PsycoLLM": [55.58, 35.07, 42.89, 88.81, 69.62, 74.20, 72.63, 48.59, 54.12, 61.72, 64.71, 24.45, 17.45, 2.04],
        "Psyche-R1": [63.31, 56.26, 66.21, 92.76, 79.62, 82.54, 87.70, 66.54, 73.34, 74.37, 77.64, 27.31, 15.33, 2.40],
    },
    orient="index",
    columns=PCEB_COLUMNS,
)


def cell_interval(cell: Cell) -> tuple[float, float]:
    """95% Wilson interval (percent) of a cell whose hits are whole items; NaN for credit averages or n = 0."""
    if cell.n == 0 or cell.hits != int(cell.hits):
        return math.nan, math.nan
    low, high = wilson_interval(int(cell.hits), cell.n)
    return 100 * low, 100 * high


def cells_table(cells: Mapping[str, Cell], convention: str) -> pd.DataFrame:
    """One row per column: value, hits of n counted (answered of total) and the Wilson interval.

    Elastic columns average partial credit, which is not a count of successes, so they get no
    Wilson interval (shown as NaN) but keep their n.
    """
    rows = []
    for name, cell in cells.items():
        low, high = cell_interval(cell)
        rows.append({"column": name, "value": cell.value, "hits": cell.hits, "n": cell.n, "answered": cell.answered,
                     "total": cell.total, "ci_low": low, "ci_high": high, "convention": convention})
    return pd.DataFrame(rows).set_index("column")


def pceb_comparison(
    ours: Mapping[str, Mapping[str, float]], chance: Mapping[str, float] | None = None, published: bool = True,
    convention: str = "",
) -> pd.DataFrame:
    """Our rows ("ours"), the chance row ("chance") and the published rows ("paper"), paper layout.

    The ``convention`` column says how each row was scored: ours under ``convention``, chance as
    an exact expectation, and the paper's rows under the benchmark's own evaluator.
    """
    frames = []
    if ours:
        mine = pd.DataFrame.from_dict({name: dict(row) for name, row in ours.items()}, orient="index")[PCEB_COLUMNS]
        frames.append(mine.assign(source="ours", convention=convention or "unstated"))
    if chance is not None:
        frames.append(pd.DataFrame([dict(chance)], index=["chance"])[PCEB_COLUMNS].assign(source="chance",
                                                                                          convention="expected value"))
    if published:
        frames.append(PUBLISHED_PCEB.assign(source="paper", convention="official (published)"))
    table = pd.concat(frames)
    return table[["source", "convention", *PCEB_COLUMNS]].round(2)


def _bars(ax, table: pd.DataFrame, columns: Sequence[str], intervals: Mapping[str, Mapping[str, tuple[float, float]]]):
    models = list(table.index)
    width = 0.8 / max(len(models), 1)
    x = np.arange(len(columns))
    for i, model in enumerate(models):
        values = np.array([table.loc[model, c] for c in columns], dtype=float)
        source = table.loc[model, "source"] if "source" in table else "paper"
        style = {"ours": {"hatch": "//"}, "chance": {"color": "lightgray", "edgecolor": "black"}}.get(source, {})
        yerr = None
        if model in intervals:
            bounds = np.array([intervals[model].get(c, (math.nan, math.nan)) for c in columns], dtype=float)
            yerr = np.nan_to_num(np.abs(np.vstack([values - bounds[:, 0], bounds[:, 1] - values])))
        ax.bar(x + i * width - 0.4 + width / 2, np.nan_to_num(values), width, label=model, yerr=yerr, capsize=2, **style)
    ax.set_xticks(x, list(columns))
    ax.set_ylabel("accuracy (%)")
    ax.set_ylim(0, 105)
    ax.legend(ncol=3, fontsize=8, loc="upper left")


def plot_pceb_bars(
    table: pd.DataFrame, columns: Sequence[str] = PCEB_ACCURACY_COLUMNS, title: str = "PCEB accuracy",
    intervals: Mapping[str, Mapping[str, tuple[float, float]]] | None = None,
):
    """Grouped bars, one group per PCEB column: published rows (and chance) in the top panel, our rows
    (and chance again, as the reference) in a panel of their own below, with 95% interval bars where
    ``intervals`` gives them (``{model: {column: (low, high)}}``, percent)."""
    source = table["source"] if "source" in table else pd.Series("paper", index=table.index)
    ours = table[(source == "ours") | (source == "chance")] if (source == "ours").any() else table.iloc[:0]
    reference = table[source != "ours"]
    panels = [(frame, label) for frame, label in ((reference, "published rows and chance"), (ours, "our rows and chance"))
              if len(frame)]
    fig, axes = plt.subplots(len(panels), 1, figsize=(12, 4.2 * len(panels)), squeeze=False)
    for ax, (frame, label) in zip(axes[:, 0], panels):
        _bars(ax, frame, columns, intervals or {})
        ax.set_title(f"{title}: {label}")
    fig.tight_layout()
    return fig


def plot_empathy_radar(scores: Mapping[str, Mapping[str, float]], title: str = "Empathy judge (0-3)"):
    """A radar of the five judge dimensions, one polygon per model; NaN dimensions are skipped."""
    keys = list(DIMENSIONS)
    angles = np.linspace(0, 2 * np.pi, len(keys), endpoint=False).tolist()
    fig, ax = plt.subplots(figsize=(5.5, 5.5), subplot_kw={"polar": True})
    for name, row in scores.items():
        values = [row.get(k, math.nan) for k in keys]
        if all(math.isnan(v) for v in values):
            continue
        ax.plot(angles + angles[:1], values + values[:1], marker="o", label=name)
        ax.fill(angles + angles[:1], values + values[:1], alpha=0.1)
    ax.set_xticks(angles, [k.replace("_", "\n") for k in keys])
    ax.set_ylim(0, 3)
    ax.set_title(title)
    ax.legend(loc="upper right", bbox_to_anchor=(1.35, 1.1), fontsize=8)
    fig.tight_layout()
    return fig
