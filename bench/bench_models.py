"""Backbone and simple-baseline timings: python -m bench.bench_models [--dataset ahns-phone] [--repeats 5]

Measured in one run, as ratios to a reference measured in the same run (the machine is shared and noisy):
the RNS epoch on MF against the RNS epoch on LightGCN (the same data and settings, epochs alternating),
every sampler's epoch on MF against the RNS epoch on MF (alternating, median of the pairwise ratios), and
the closed-form fits of MostPop, ItemKNN and EASE against one RNS epoch on LightGCN (medians of
`--repeats` fits). Writes results/bench/models-DATASET.json and prints a table.
"""
from __future__ import annotations

import argparse
import logging
import statistics
import sys
import time
from pathlib import Path
from typing import Optional

import torch

from bench.bench_epoch import add_common_arguments, build, checked_base
from conf.config import resolve
from data.dataset import load_data
from model import get_model_class
from util.io import atomic_write_json

log = logging.getLogger("bench.bench_models")
SIMPLE = ("MostPop", "ItemKNN", "EASE")


def epoch_seconds(rec) -> float:
    """One training epoch (sampling + training) of a built recommender."""
    out = rec.train_epoch(1)
    return out["sample_s"] + out["train_s"]


def alternating(a, b, repeats: int) -> tuple[float, float, float]:
    """(median epoch of a, median epoch of b, median of the pairwise ratios a / b), epochs alternating."""
    xs, ys, ratios = [], [], []
    for _ in range(repeats):
        y = epoch_seconds(b)
        x = epoch_seconds(a)
        xs.append(x)
        ys.append(y)
        ratios.append(x / y)
    return statistics.median(xs), statistics.median(ys), statistics.median(ratios)


def fit_seconds(model: str, base: dict, device: torch.device, repeats: int) -> float:
    """Median seconds of the closed-form fit of a simple baseline (its fit(), no evaluation)."""
    cfg = resolve({**base, "model.name": model})
    data = load_data(**cfg.data_arguments())
    rec = get_model_class(model)(cfg, data, device, Path("."))
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        rec.fit(data.train)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main(argv: Optional[list[str]] = None) -> int:
    """Command line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_common_arguments(parser, "ahns-phone")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(args.threads)
    device = torch.device("cpu")
    base = checked_base(args, {"dataset": args.dataset, "dataset.root": args.dataset_root, "device": "cpu",
                               "max.epoch": 120, "fhn.probe": 0, "selection": "reference"},  # no file is evaluated
                        extra={"model.name": "MF"})
    if base is None:
        return 2
    lightgcn = build("rns", base, device)
    mf_rns = build("rns", base, device, {"model.name": "MF"})
    mf_s, lg_s, mf_ratio = alternating(mf_rns, lightgcn, args.repeats)
    results = {"dataset": args.dataset, "threads": torch.get_num_threads(), "repeats": args.repeats,
               "set": args.overrides, "lightgcn_rns_epoch_s": lg_s, "mf_rns_epoch_s": mf_s,
               "mf_rns_x_lightgcn_rns": mf_ratio, "mf": {}, "fit_s": {}}
    for name in args.configs:
        if name == "rns":
            continue
        rec = build(name, base, device, {"model.name": "MF"})
        e, r, ratio = alternating(rec, mf_rns, args.repeats)
        results["mf"][name] = {"epoch_s": e, "mf_rns_epoch_s": r, "x_mf_rns": ratio}
    for model in SIMPLE:
        results["fit_s"][model] = fit_seconds(model, base, device, args.repeats)
    print(f"{args.dataset}, {results['threads']} threads, medians of {args.repeats}")
    print(f"RNS epoch: LightGCN {lg_s:.2f} s, MF {mf_s:.2f} s; MF / LightGCN {mf_ratio:.2f} (pairwise median)")
    print("| sampler on MF | epoch s | x RNS on MF |\n|---|---|---|")
    for name, r in results["mf"].items():
        print(f"| {name} | {r['epoch_s']:.2f} | {r['x_mf_rns']:.2f} |")
    print("| simple baseline | fit s | x one LightGCN RNS epoch |\n|---|---|---|")
    for model, sec in results["fit_s"].items():
        print(f"| {model} | {sec:.2f} | {sec / lg_s:.2f} |")
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(args.out / f"models-{args.dataset}.json", results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
