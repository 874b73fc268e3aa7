"""Command line: ``python -m psyche_utils.train {sft,grpo} --config FILE [--key value ...]``."""

from __future__ import annotations

import importlib
import sys

STAGES = {"sft": "psyche_utils.train.sft", "grpo": "psyche_utils.train.grpo"}


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] not in STAGES:
        print(f"usage: python -m psyche_utils.train {{{','.join(STAGES)}}} --config FILE [--key value ...]", file=sys.stderr)
        return 2
    stage = importlib.import_module(STAGES[args[0]])
    return stage.main(args[1:]) or 0


if __name__ == "__main__":
    sys.exit(main())
