"""Evaluation timings: the score product and top-k of every evaluation batch, in fresh memory or in one reused buffer.

  python -m bench.bench_eval --dataset yelp2018 --dataset-root ../shared/datasets --repeats 5 --threads 1

A run evaluates every eval file at every epoch, batch by batch: the batch's users times every item, masked, then
top-k. Each batch's scores used to go to a fresh batch x n_items tensor, whose pages the CPU faults in anew on every
batch; util/evaluation.py's EvalBuffers reuses one buffer for every batch and file of an evaluation (the same
numbers, tests/test_evaluation.py). Per repeat, each file's batches are timed both ways, one right after the other,
the way that goes first alternating from batch to batch (this machine's speed drifts; a batch's second run finds
the embeddings in cache), and the ratio reused / fresh is the median of the repeats' ratios; the time of a
whole evaluation (every file, shared buffers, as a run makes it) is printed beside it. The embeddings are those of
an untrained LightGCN (the timings do not depend on the values). Writes results/bench/eval-DATASET-DEVICE.json.
"""
from __future__ import annotations

import argparse
import logging
import statistics
import sys
import time
from typing import Optional

import torch

from bench.bench_epoch import _sync, add_timing_arguments, build, checked_base
from model.graph.LightGCN import LightGCN
from util.device import resolve_device
from util.evaluation import EvalBuffers
from util.io import atomic_write_json


def time_batches(rec: LightGCN, user_all: torch.Tensor, item_all: torch.Tensor, buffers: EvalBuffers,
                 device: torch.device) -> tuple[float, float]:
    """Seconds of every file's batches (score product, mask and top-k), in fresh memory and in `buffers`, each
    batch both ways, the way that goes first alternating from batch to batch."""
    fresh = reused = 0.0
    batch = 0
    for ev in rec.evaluators.values():
        for start in range(0, len(ev.users_np), ev.batch_users):
            end = min(start + ev.batch_users, len(ev.users_np))
            batch += 1
            for out in ((None, buffers.scores) if batch % 2 else (buffers.scores, None)):
                _sync(device)
                t0 = time.perf_counter()
                ev.topk(user_all, item_all, ev.max_k, start, end, out)
                _sync(device)
                if out is None:
                    fresh += time.perf_counter() - t0
                else:
                    reused += time.perf_counter() - t0
    return fresh, reused


def main(argv: Optional[list[str]] = None) -> int:
    """Command line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_timing_arguments(parser)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    args.configs, args.overrides = ["rns"], []
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    base = checked_base(args, {"dataset": args.dataset, "dataset.root": args.dataset_root, "device": args.device})
    if base is None:
        return 2
    rec = build("rns", base, device, max_batches=1)
    with torch.no_grad():
        user_all, item_all = rec.model()
    buffers = EvalBuffers.shared(rec.evaluators.values(), user_all)
    time_batches(rec, user_all, item_all, buffers, device)  # warm-up
    fresh, reused, ratios, whole = [], [], [], []
    for _ in range(args.repeats):
        f, r = time_batches(rec, user_all, item_all, buffers, device)
        fresh.append(f)
        reused.append(r)
        ratios.append(r / f)
        _sync(device)
        t0 = time.perf_counter()
        rec.evaluate_all()
        _sync(device)
        whole.append(time.perf_counter() - t0)
    files = {name: len(ev.users_np) for name, ev in rec.evaluators.items()}
    result = {"dataset": args.dataset, "device": str(device), "threads": torch.get_num_threads(),
              "repeats": args.repeats, "items": rec.data.n_items, "eval_users": files,
              "batches_fresh_s": statistics.median(fresh), "batches_reused_s": statistics.median(reused),
              "reused_over_fresh": statistics.median(ratios), "ratio_range": [min(ratios), max(ratios)],
              "evaluation_s": statistics.median(whole)}
    atomic_write_json(args.out / f"eval-{args.dataset}-{device.type}.json", result)
    print(f"{args.dataset} on {device}, {result['threads']} thread(s), {rec.data.n_items} items, eval users {files}; "
          f"medians of {args.repeats}")
    print(f"score product + mask + top-k of every batch: fresh memory {result['batches_fresh_s']:.3f} s, "
          f"reused buffer {result['batches_reused_s']:.3f} s, ratio {result['reused_over_fresh']:.2f} "
          f"({min(ratios):.2f}-{max(ratios):.2f}); a whole evaluation (every file, as a run makes it) "
          f"{result['evaluation_s']:.3f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
