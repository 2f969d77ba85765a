"""The whole study with one command: python -m bench.study [--grids NAME|FILE ...] [--jobs N] [--dataset-root DIR]

Runs each grid (a shipped name, conf/grids/NAME.yaml, or a grid file; finished cells are skipped, so this
resumes) into results/grids/NAME/ and then writes its table to results/tables/NAME/ (for `released`, also
selection.md: its ranking against main's `valid`, when main has run) and, when matplotlib is installed,
its figures to results/tables/NAME/figures/. A grid's table is written even when some of its cells failed
(they are listed in grid.json and the log); a grid that cannot start (a bad grid file) stops the study
with exit 2.
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Optional

from bench import grid as grid_cli
from bench import plot
from bench import table as table_cli
from bench.gridfile import load_grid
from conf.config import REPO
from util.typing_coerce import ConfigError

# the comparison first, then what explains it; adar last (its table predates the tracked run records)
ORDER = ("quick", "main", "ablation", "released", "depop", "sensitivity", "adar")
# grids whose tables also compare their selection with another grid's protocol (bench.table --against)
AGAINST = {"released": ("main", "valid")}
log = logging.getLogger("bench.study")


def main(argv: Optional[list[str]] = None) -> int:
    """Command line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--grids", nargs="+", default=list(ORDER),
                        help=f"grid names or files (default, in this order: {' '.join(ORDER)})")
    parser.add_argument("--jobs", type=int, default=1)
    parser.add_argument("--dataset-root", default="dataset")
    parser.add_argument("--results", type=Path, default=REPO / "results" / "grids", help="where the run folders go")
    parser.add_argument("--tables", type=Path, default=REPO / "results" / "tables", help="where the tables go")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S")
    files = [Path(g) if g.endswith((".yaml", ".yml")) else REPO / "conf" / "grids" / f"{g}.yaml" for g in args.grids]
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        log.error("no grid file %s (shipped: %s)", ", ".join(missing), " ".join(ORDER))
        return 2
    for path in files:
        try:
            name = load_grid(path).name
        except ConfigError as exc:
            log.error("%s", exc)
            return 2
        log.info("grid %s", name)
        results = args.results / name
        code = grid_cli.main([str(path), "--jobs", str(args.jobs), "--dataset-root", args.dataset_root,
                              "--out", str(results)])
        if code != 0:
            return code
        against = []
        if name in AGAINST and (args.results / AGAINST[name][0] / "grid.json").is_file():
            against = ["--against", str(args.results / AGAINST[name][0]), "--against-protocol", AGAINST[name][1]]
        table_cli.main([str(results), "--out", str(args.tables / name)] + against)
        if plot.available():
            plot.main([str(results), "--out", str(args.tables / name / "figures")])
    return 0


if __name__ == "__main__":
    sys.exit(main())
