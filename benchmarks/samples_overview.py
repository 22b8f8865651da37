"""The sample-level results over forget sets in one figure: ``--root``/figures/overview.png.

Reads ``--root/<set>/results.json`` (``genunlearn bench compare --forget-ids``, one folder per forget set) and draws,
per set, every method's LiRA AUC against the original's and the retrained model's. The overview table is the
README's ``samples-overview`` block (``genunlearn report``).

    python benchmarks/samples_overview.py --root results/samples
"""

from __future__ import annotations

import argparse
from pathlib import Path

from genunlearn.experiments.samples import collect, overview_figure


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--root", default="results/samples")
    args = ap.parse_args()
    out = Path(args.root) / "figures" / "overview.png"
    overview_figure(out, collect(args.root))
    print(out)


if __name__ == "__main__":
    main()
