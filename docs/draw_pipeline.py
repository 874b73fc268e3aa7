"""Draw the Psyche-R1 pipeline figure (docs/pipeline.png): six stages, their notebooks and their files.

Run ``python docs/draw_pipeline.py`` after changing a stage's outputs; a test re-draws the figure and
compares it with the committed PNG, so the picture cannot silently drift from this description.
"""

from __future__ import annotations

import argparse
from pathlib import Path

DOCS_DIR = Path(__file__).resolve().parent

# (stage, what happens, notebook, files it writes under outputs/)
STAGES: list[tuple[str, str, str, list[str]]] = [
    ("1. Cleaning", "four rules (emoji, links and ads, repetition, punctuation width),\n"
     "each change recorded in a report",
     "01_data_curation", ["data/posts.jsonl"]),
    ("2. Question generation", "LLM writes exam questions; MinHash dedup, quality filter, human review,\n"
     "contamination check against the benchmarks", "01_data_curation",
     ["data/questions.jsonl", "data/review/questions_review.csv"]),
    ("3. Rationales", "teacher writes step-by-step rationales; the prompt is optimised round by round\n"
     "until the rationale reaches the gold answer", "02_rationales_and_selection", ["data/rationale_history.jsonl"]),
    ("4. Empathetic dialogues", "a teacher rewrites each help-seeker post's reply with an empathy-focused\n"
     "think block; mechanical checks keep or reject each rewrite",
     "02_rationales_and_selection", ["data/dialogue_checks.jsonl"]),
    ("5. Multi-LLM cross-selection", "a panel of solvers answers each question; all wrong -> GRPO,\n"
     "otherwise -> SFT", "02_rationales_and_selection",
     ["data/selection.jsonl", "data/sft.jsonl", "data/grpo.jsonl"]),
    ("6. SFT, then GRPO", "supervised fine-tuning on rationales + dialogues, then GRPO with\n"
     "format and accuracy rewards on the challenging set", "03_sft, 04_grpo",
     ["models/<profile>/sft/", "models/<profile>/grpo/"]),
]
AFTER = ("Then: 05_evaluation scores base, SFT and GRPO models on PCEB, CPsyExam and SoulChat2.0 "
         "(outputs/eval/);\n06_chat_and_safety chats with the trained model behind a crisis screen. "
         "00_setup_and_tour builds the tiny model (outputs/tiny/).")
COLOURS = {"01": "#dbe9f6", "02": "#e3f1dc", "03": "#fbe5d6"}


def draw(output: Path) -> Path:
    """Draw the figure and save it as PNG without a timestamp, so re-drawing gives the same file."""
    # Imported here: notebooks and tests read STAGES without touching their own matplotlib backend.
    import matplotlib.pyplot as plt
    from matplotlib.patches import FancyBboxPatch

    fig, ax = plt.subplots(figsize=(12, 9.2))
    fig.subplots_adjust(left=0.01, right=0.99, bottom=0.01, top=0.99)
    ax.set_xlim(0, 12)
    ax.set_ylim(0, 9.2)
    ax.axis("off")
    ax.text(6, 8.85, "The Psyche-R1 pipeline, as this tutorial rebuilds it", ha="center", va="center",
            fontsize=15, weight="bold")
    top, height, gap = 8.3, 1.05, 0.22
    for index, (title, what, notebook, files) in enumerate(STAGES):
        y = top - index * (height + gap) - height
        colour = COLOURS[notebook[:2]]
        ax.add_patch(FancyBboxPatch((0.2, y), 7.4, height, boxstyle="round,pad=0.02,rounding_size=0.12",
                                    facecolor=colour, edgecolor="#555555"))
        ax.text(0.4, y + height - 0.25, title, fontsize=12, weight="bold", va="center")
        ax.text(7.45, y + height - 0.25, f"notebook {notebook}", fontsize=9, ha="right", va="center",
                style="italic", color="#333333")
        ax.text(0.4, y + 0.38, what, fontsize=9.5, va="center")
        ax.add_patch(FancyBboxPatch((8.1, y), 3.7, height, boxstyle="round,pad=0.02,rounding_size=0.12",
                                    facecolor="#f4f4f4", edgecolor="#999999"))
        ax.text(8.25, y + height - 0.22, "writes under outputs/", fontsize=8.5, color="#666666", va="center")
        for line, name in enumerate(files):
            ax.text(8.25, y + height - 0.5 - line * 0.22, name, fontsize=9.5, family="monospace", va="center")
        ax.annotate("", xy=(8.08, y + height / 2), xytext=(7.62, y + height / 2),
                    arrowprops={"arrowstyle": "->", "color": "#777777"})
        if index < len(STAGES) - 1:
            ax.annotate("", xy=(3.9, y - gap + 0.02), xytext=(3.9, y - 0.02),
                        arrowprops={"arrowstyle": "-|>", "color": "#333333", "lw": 1.5})
    ax.text(0.2, 0.22, AFTER, fontsize=9.5, va="center", color="#333333")
    output.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(output, dpi=100, metadata={"Software": None})
    plt.close(fig)
    return output


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=DOCS_DIR / "pipeline.png")
    print(draw(parser.parse_args().output))


if __name__ == "__main__":
    main()
