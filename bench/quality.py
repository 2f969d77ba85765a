"""Quality protocols on a dataset (default Food): each configuration is one `python main.py` run in a fresh
process; finished runs are skipped, so the command can be re-run to resume. Summaries are mean +- std.

  python -m bench.quality released --seeds 2025 2026 2027      # the authors' protocol (test-set selection)
  python -m bench.quality valid --seeds 2025 2026 2027         # validation selection, lr chosen on valid
  python -m bench.quality summary released|valid               # print the tables again

released: 120 epochs, lr 0.01, test_all4 selection on test_ood, train-only masking (as the released code);
          methods: CNSDiff official preset, plain LightGCN (RNS).
valid:    selection on valid_iid (Recall@20, patience 10), train+valid masking; per method the learning
          rate in {0.01, 0.001} with the best validation Recall@20 on the first seed, then all seeds.
          methods: RNS, CNSDiff official, CNSDiff paper.
"""
from __future__ import annotations

import argparse
import json
import logging
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Optional

log = logging.getLogger("bench.quality")
ROOT = Path(__file__).resolve().parents[1]
METHODS = {
    "rns": ["negative.sampler=rns"],
    "cnsdiff-official": ["negative.sampler=cnsdiff", "params.cnsdiff.preset=official"],
    "cnsdiff-paper": ["negative.sampler=cnsdiff", "params.cnsdiff.preset=paper"],
}
PROTOCOLS = {
    "released": {"methods": ["cnsdiff-official", "rns"], "lrs": [0.01],
                 "keys": ["max.epoch=120", "selection=test_all4", "selection.test=test_ood", "eval.mask=train",
                          "valid.set=none"]},
    "valid": {"methods": ["rns", "cnsdiff-official", "cnsdiff-paper"], "lrs": [0.01, 0.001],
              "keys": ["max.epoch=120", "selection=valid", "early_stop.patience=10", "eval.mask=train_valid"]},
}
REPORT = ("Recall@10", "NDCG@10", "Recall@20", "NDCG@20")


def run_dir(out: Path, method: str, lr: float, seed: int) -> Path:
    """The folder that holds one configuration's run."""
    return out / f"{method}-lr{lr:g}-seed{seed}"


def metrics_of(folder: Path) -> Optional[dict]:
    """metrics.json of the finished run under folder, or None."""
    found = sorted(folder.glob("*/metrics.json"))
    return json.loads(found[-1].read_text()) if found else None


def run_one(out: Path, dataset_keys: list[str], protocol: str, method: str, lr: float, seed: int,
            threads: int) -> dict:
    """Run one configuration (unless already finished) and return its metrics."""
    folder = run_dir(out, method, lr, seed)
    done = metrics_of(folder)
    if done is not None:
        return done
    keys = dataset_keys + PROTOCOLS[protocol]["keys"] + METHODS[method] + [
        f"learning.rate={lr}", f"seed={seed}", f"output={folder}", f"log.dir={folder / 'log'}"]
    cmd = [sys.executable, "main.py", "--threads", str(threads)] + [a for k in keys for a in ("--set", k)]
    log.info("running %s", " ".join(cmd))
    subprocess.run(cmd, cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
    return metrics_of(folder)


def choose_lr(out: Path, method: str, lrs: list[float], seed: int) -> float:
    """The learning rate with the best validation Recall@20 on the given seed."""
    scores = {lr: metrics_of(run_dir(out, method, lr, seed))["metrics"]["valid"]["Recall@20"] for lr in lrs}
    return max(scores, key=scores.get)


def summarize(out: Path, protocol: str, seeds: list[int]) -> str:
    """Markdown table of mean +- std over seeds per method (at the chosen lr for the valid protocol)."""
    spec = PROTOCOLS[protocol]
    lines = ["| method | lr | file | " + " | ".join(REPORT) + " | selected epochs |",
             "|---|---|---|" + "---|" * (len(REPORT) + 1)]
    for method in spec["methods"]:
        lrs = spec["lrs"]
        if len(lrs) > 1:
            try:
                lrs = [choose_lr(out, method, lrs, seeds[0])]
            except TypeError:
                continue
        runs = [m for m in (metrics_of(run_dir(out, method, lrs[0], s)) for s in seeds) if m]
        if not runs:
            continue
        files = [f for f in ("valid", "test_iid", "test_ood") if f in runs[0]["metrics"]]
        epochs = ", ".join(str(r["selection"]["epoch"]) for r in runs)
        for f in files:
            cells = []
            for key in REPORT:
                values = [r["metrics"][f][key] for r in runs]
                sd = statistics.stdev(values) if len(values) > 1 else 0.0
                cells.append(f"{statistics.mean(values):.5f} ± {sd:.5f}")
            lines.append(f"| {method} | {lrs[0]:g} | {f} | " + " | ".join(cells) + f" | {epochs} |")
    lines.append(f"\n(n = {len(seeds)} seeds: {', '.join(map(str, seeds))})")
    return "\n".join(lines)


def main(argv: Optional[list[str]] = None) -> int:
    """Command line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("protocol", choices=list(PROTOCOLS) + ["summary"])
    parser.add_argument("which", nargs="?", choices=list(PROTOCOLS), help="protocol to summarise")
    parser.add_argument("--seeds", type=int, nargs="+", default=[2025, 2026, 2027])
    parser.add_argument("--dataset", default="food")
    parser.add_argument("--dataset-root", default="dataset", help="folder holding <dataset>/ (e.g. ../shared/datasets)")
    parser.add_argument("--out", type=Path, default=Path("results/quality"))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--methods", nargs="+", choices=list(METHODS), default=None)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    protocol = args.which if args.protocol == "summary" else args.protocol
    out = args.out / args.dataset / protocol
    if args.protocol != "summary":
        spec = PROTOCOLS[protocol]
        dataset_keys = [f"dataset={args.dataset}", f"dataset.root={args.dataset_root}"]
        for method in args.methods or spec["methods"]:
            for lr in spec["lrs"]:
                run_one(out, dataset_keys, protocol, method, lr, args.seeds[0], args.threads)
            lr = choose_lr(out, method, spec["lrs"], args.seeds[0]) if len(spec["lrs"]) > 1 else spec["lrs"][0]
            for seed in args.seeds[1:]:
                run_one(out, dataset_keys, protocol, method, lr, seed, args.threads)
    table = summarize(out, protocol, args.seeds)
    (out / "summary.md").parent.mkdir(parents=True, exist_ok=True)
    (out / "summary.md").write_text(table + "\n")
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
