"""Speed of vitlab's ViT against timm's same architecture: ``vitlab bench`` with this
benchmark's original defaults (vit_s16 at 224 px, batch 4, CPU).

The measurement itself (same weights, the two models alternating within each round,
medians and paired ratios; MFU on a GPU) lives in ``vitlab.bench``; every option of
``vitlab bench`` is accepted here and overrides these defaults.

    python benchmarks/bench_vit_vs_timm.py                          # vit_s16, batch 4, CPU
    python benchmarks/bench_vit_vs_timm.py --threads 1 --rounds 15
    python benchmarks/bench_vit_vs_timm.py --model vit_b16 --batch-size 256 --device cuda --amp bf16

Results and the machines they came from: benchmarks/RESULTS.md.
"""

from __future__ import annotations

import sys

from vitlab import cli

DEFAULTS = ["--model", "vit_s16", "--batch-size", "4"]  # options given later on the command line win


def main(argv: list[str] | None = None) -> int:
    return cli.main(["bench", *DEFAULTS, *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
