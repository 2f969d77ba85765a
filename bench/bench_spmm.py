"""LightGCN's propagation on the CPU: torch.sparse.mm against the numba kernel of util/sparse.py (the same bits).

  python -m bench.bench_spmm --dataset yelp2018 --dataset-root ../shared/datasets --repeats 5 --threads 1

A LightGCN batch propagates the embeddings over the normalised adjacency, n_layer sparse products forward and as
many backward; they were most of a yelp2018 epoch's training time. Timed with torch.sparse.mm and with the kernel,
each step both ways one right after the other, the way that goes first alternating from step to step (this
machine's speed drifts, and the second of two steps finds their data in cache): `--batches` bare products (the
adjacency times the layer-0 embeddings), `--batches` propagations (forward and backward, as a training batch makes
them), and one training epoch of `--sampler` (default RNS; the wall time of train_epoch: sampling and training, no
evaluation), per repeat;
kernel / torch is the median of the repeats' ratios. Only the product's dispatch is switched (products_by_torch).
Writes results/bench/spmm-DATASET-SAMPLER-cpu.json.
"""
from __future__ import annotations

import argparse
import logging
import math
import statistics
import sys
import time
from contextlib import contextmanager
from typing import Any, Callable, Iterator, Optional

import torch

import base.torch_interface as TI
import util.device
from base.torch_interface import sparse_mm
from bench.bench_epoch import CONFIGS, add_timing_arguments, at_least_one, build, checked_base
from util.io import atomic_write_json


@contextmanager
def products_by_torch(on: bool) -> Iterator[None]:
    """While on, base.torch_interface's sparse products take torch.sparse.mm on the CPU too (only that dispatch is
    switched: the sampler's draws and ids keep their CPU paths, as util.device.FORCE_DEVICE_PATHS would not)."""
    previous = TI.host_path
    TI.host_path = (lambda tensor: False) if on else previous
    try:
        yield
    finally:
        TI.host_path = previous


def alternate(step: Callable[[], object], times: int, first: int = 0) -> tuple[float, float]:
    """Seconds of `times` steps with torch.sparse.mm and with the kernel: each step both ways, one right after the
    other, the way that goes first alternating from step to step (torch first at the even counts from `first`, so
    that one step per repeat alternates across the repeats)."""
    seconds = {True: 0.0, False: 0.0}
    for i in range(first, first + times):
        for on in ((True, False) if i % 2 == 0 else (False, True)):
            with products_by_torch(on):
                t0 = time.perf_counter()
                step()
                seconds[on] += time.perf_counter() - t0
    return seconds[True], seconds[False]


def summary(pairs: list[tuple[float, float]], per: int) -> dict[str, Any]:
    """Medians of the torch and kernel seconds per step, and of the repeats' kernel / torch ratios, with their range."""
    ratios = [k / t for t, k in pairs]
    return {"torch_s": statistics.median(t for t, _ in pairs) / per,
            "kernel_s": statistics.median(k for _, k in pairs) / per,
            "kernel_over_torch": statistics.median(ratios), "range": [min(ratios), max(ratios)]}


def main(argv: Optional[list[str]] = None) -> int:
    """Command line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_timing_arguments(parser)
    parser.add_argument("--batches", type=at_least_one, default=10, help="products and propagations per repeat")
    parser.add_argument("--layers", type=at_least_one, default=3, help="LightGCN.n_layer (the main grid's 3)")
    parser.add_argument("--sampler", choices=list(CONFIGS), default="rns", help="the epoch's sampler configuration")
    args = parser.parse_args(argv)
    args.configs = [args.sampler]
    logging.basicConfig(level=logging.WARNING)
    util.device.set_threads(args.threads)
    base = checked_base(args, {"dataset": args.dataset, "dataset.root": args.dataset_root, "device": "cpu",
                               "LightGCN.n_layer": args.layers})
    if base is None:
        return 2
    rec = build(args.sampler, base, torch.device("cpu"))  # its warm-up epoch compiles the kernel
    encoder = rec.model
    x = torch.cat([encoder.user_emb, encoder.item_emb]).detach()

    def propagation() -> None:
        user, item, _ = encoder.propagate()
        (user.sum() + item.sum()).backward()

    parts = {"product": (lambda: sparse_mm(encoder.adj, x), args.batches),
             "propagation": (propagation, args.batches), "epoch": (lambda: rec.train_epoch(1), 1)}
    result: dict[str, Any] = {"dataset": args.dataset, "sampler": args.sampler, "threads": torch.get_num_threads(),
                              "repeats": args.repeats,
                              "layers": encoder.n_layers, "nnz": int(encoder.adj.values().numel()),
                              "steps": args.batches,  # products and propagations per repeat and way
                              "epoch_batches": math.ceil(rec.data.train.nnz / rec.config.batch_size)}
    for name, (step, per) in parts.items():
        result[name] = summary([alternate(step, per, first=r) for r in range(args.repeats)], per)
    atomic_write_json(args.out / f"spmm-{args.dataset}-{args.sampler}-cpu.json", result)
    print(f"{args.dataset}, {result['threads']} thread(s), {encoder.n_layers} layers, {result['nnz']} nonzeros, "
          f"{result['epoch_batches']} batches an epoch; medians of {args.repeats}")
    for name, label in (("product", "one bare product"), ("propagation", "a propagation, forward and backward"),
                        ("epoch", f"a training epoch of {args.sampler}")):
        r = result[name]
        print(f"{label}: torch.sparse.mm {r['torch_s'] * 1e3:.1f} ms, kernel {r['kernel_s'] * 1e3:.1f} ms, ratio "
              f"{r['kernel_over_torch']:.2f} ({r['range'][0]:.2f}-{r['range'][1]:.2f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
