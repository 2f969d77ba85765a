"""Evaluation timings: every eval file ranked on its own against the files ranked together (SharedRanking).

  python -m bench.bench_eval --dataset yelp2018 --dataset-root ../shared/datasets --repeats 5 --threads 1

A run evaluates every eval file at every epoch: per batch of users, their scores against every item, the masked
items, then top-k. Ranked file by file, a user of four files gets four score rows; util/evaluation.py's
SharedRanking computes one row per user for the files whose masks nest (the valid file masks training items, the
test files training and valid items) and takes each file's top-k from it, the same numbers
(tests/test_evaluation.py; this script checks them too). Per repeat, the whole evaluation is timed both ways, one
right after the other, the way that goes first alternating from repeat to repeat (this machine's speed drifts),
and the ratio shared / per file is the median of the repeats' ratios. The files are the dataset's; --set
test.set.NAME=PATH replaces its test files by those given (give all of them: docs/speed.md shows the study's four).
The embeddings are those of an untrained LightGCN (the timings do not depend on the values). Writes
results/bench/eval-DATASET-DEVICE.json.
"""
from __future__ import annotations

import logging
import sys
from typing import Optional

import torch

from bench.bench_epoch import alternating, both_ways, one_config_bench
from util.evaluation import EvalBuffers, SharedRanking
from util.io import atomic_write_json

log = logging.getLogger(__name__)


def main(argv: Optional[list[str]] = None) -> int:
    """Command line."""
    args, device, rec = one_config_bench(argv, __doc__.split("\n\n")[0], "rns")
    if rec is None:
        return 2
    with torch.no_grad():
        user_all, item_all = rec.model()
    evaluators = rec.evaluators
    ranking = SharedRanking(evaluators)

    def per_file() -> dict:
        buffers = EvalBuffers(max(ev.batch_rows for ev in evaluators.values()), rec.data.n_items, user_all.dtype,
                              device)
        return {name: ev.evaluate(user_all, item_all, buffers) for name, ev in evaluators.items()}

    def shared() -> dict:
        return ranking.evaluate(user_all, item_all)

    if per_file() != shared():  # also the warm-up
        log.error("the shared ranking's metrics differ from the files' own: a bug, nothing timed")
        return 1
    alone, together = alternating(per_file, shared, args.repeats, device)
    files = {name: len(ev.users_np) for name, ev in evaluators.items()}
    alone_rows = sum(files[name] for name in ranking.alone)  # files evaluated alone: a row per user either way
    score_rows = {"per_file": sum(files.values()), "shared": sum(len(c.users) for c in ranking.chains) + alone_rows}
    topk_rows = {"per_file": sum(files.values()),
                 "shared": sum(len(c.users) * len(c.steps) for c in ranking.chains) + alone_rows}
    result = {**both_ways(args, device, ("shared", together), ("per_file", alone)), "items": rec.data.n_items,
              "eval_users": files, "alone": ranking.alone, "score_rows": score_rows, "topk_rows": topk_rows}
    low, high = result["ratio_range"]
    atomic_write_json(args.out / f"eval-{args.dataset}-{device.type}.json", result)
    print(f"{args.dataset} on {device}, {result['threads']} thread(s), {rec.data.n_items} items, eval users {files}; "
          f"medians of {args.repeats}")
    print(f"a whole evaluation: each file on its own {result['per_file_s']:.3f} s ({score_rows['per_file']} score "
          f"rows), shared ranking {result['shared_s']:.3f} s ({score_rows['shared']} score rows, "
          f"{topk_rows['shared']} top-k rows); ratio {result['shared_over_per_file']:.2f} "
          f"({low:.2f}-{high:.2f}); the same metrics both ways")
    return 0


if __name__ == "__main__":
    sys.exit(main())
