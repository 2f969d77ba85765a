"""CNSDiff's contrastive term, forward and backward, with its synthetic negatives frozen against trainable.

  python -m bench.bench_contrastive --dataset yelp2018 --dataset-root ../shared/datasets --repeats 7 --threads 1

The term's 2B negatives are B synthetic ones, which carry no gradient (the diffusion chains run without it), and B
random items. Frozen (CNSDiff's way since util.loss.splits_frozen_grad): the backward product for the negatives
runs over the random half only. Trainable: the synthetic half made a leaf that wants a gradient, so the product
runs over all 2B rows, as before. One batch of real embeddings (a LightGCN with CNSDiff `official`, after one
warm-up batch; the term is the same code in both presets), the two timed one right after the other (which goes
first alternates), medians of the repeats; the script first checks that both give the positives and the random
negatives the same gradients. Writes results/bench/contrastive-DATASET-DEVICE.json.
"""
from __future__ import annotations

import logging
import sys
from typing import Optional

import torch

from bench.bench_epoch import alternating, both_ways, first_batch, one_config_bench
from util.io import atomic_write_json

log = logging.getLogger(__name__)


def main(argv: Optional[list[str]] = None) -> int:
    """Command line."""
    args, device, rec = one_config_bench(argv, __doc__.split("\n\n")[0], "cnsdiff-official")
    if rec is None:
        return 2
    sampler = rec.sampler
    batch = first_batch(rec)
    pos_emb, rand_emb = batch.items(batch.pos), batch.items(batch.cands[:, 0])
    hard = sampler.generate(pos_emb, batch.user_all[batch.users] if sampler.params.user_condition else None)[0]

    def step(frozen: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """One forward and backward of the term; the gradients of the positives and the random negatives."""
        p, r = pos_emb.clone().requires_grad_(True), rand_emb.clone().requires_grad_(True)
        torch.manual_seed(0)  # the positives' noise: the same draw both ways
        sampler.contrastive(p, hard if frozen else hard.clone().requires_grad_(True), r).backward()
        return p.grad, r.grad

    if any(not torch.equal(a, b) for a, b in zip(step(True), step(False))):  # also the warm-up
        log.error("the gradients differ between the frozen and the trainable synthetic half: a bug, nothing timed")
        return 1
    frozen_s, trainable_s = alternating(lambda: step(True), lambda: step(False), args.repeats, device)
    result = {**both_ways(args, device, ("frozen", frozen_s), ("trainable", trainable_s)),
              "rows_dim": list(pos_emb.shape), "negatives": 2 * len(pos_emb)}
    low, high = result["ratio_range"]
    atomic_write_json(args.out / f"contrastive-{args.dataset}-{device.type}.json", result)
    print(f"{args.dataset} on {device}, {result['threads']} thread(s), {len(pos_emb)} rows x {result['negatives']} "
          f"negatives, d {pos_emb.shape[1]}; forward + backward, medians of {args.repeats}: synthetic half frozen "
          f"{result['frozen_s'] * 1000:.1f} ms, trainable {result['trainable_s'] * 1000:.1f} ms, ratio "
          f"{result['frozen_over_trainable']:.2f} ({low:.2f}-{high:.2f}); the same gradients both ways")
    return 0


if __name__ == "__main__":
    sys.exit(main())
