"""DENS's candidate scoring in row chunks against all rows at once (module/samplers/dens.py, CHUNK_ROWS).

  python -m bench.bench_dens --dataset yelp2018 --dataset-root ../shared/datasets --repeats 5 --threads 1 \\
      --set params.dens.n_candidates=16 --set LightGCN.n_layer=3

With per_layer on (the reference's DENS) every row's M candidates are gated and scored at every LightGCN layer:
(B, L+1, M, d) temporaries, 34 MB each at B = 2048, M = 16, L+1 = 4, d = 64. Scored CHUNK_ROWS rows at a time
they stay in cache; all at once they go to fresh memory. One batch of real candidates and embeddings (a LightGCN
after one warm-up batch), the scoring timed both ways one right after the other (which goes first alternates), medians of the
repeats; the script first checks that both ways give the same scores. Writes results/bench/dens-DATASET-DEVICE.json.
"""
from __future__ import annotations

import logging
import sys
from typing import Optional

import torch

import module.samplers.dens as dens
from bench.bench_epoch import alternating, both_ways, first_batch, one_config_bench
from util.io import atomic_write_json

log = logging.getLogger(__name__)


def main(argv: Optional[list[str]] = None) -> int:
    """Command line."""
    args, device, rec = one_config_bench(argv, __doc__.split("\n\n")[0], "dens")
    if rec is None:
        return 2
    sampler = rec.sampler
    if not sampler.params.per_layer:
        log.error("params.dens.per_layer is off: the chunked scoring is per_layer's; nothing to time")
        return 2
    if device.type != "cpu" or rec.config.embedding_size % 16:
        log.error("the candidates are scored in chunks on the CPU with an embedding size that is a multiple of 16 "
                  "only (got %s, %d); nothing to compare", device, rec.config.embedding_size)
        return 2
    batch = first_batch(rec)
    users_l, pos_l = batch.user_layers().transpose(0, 1), batch.item_layers(batch.pos).transpose(0, 1)

    def scores(chunk: int) -> torch.Tensor:
        dens.CHUNK_ROWS = chunk
        return sampler.layer_scores(batch, users_l, pos_l, 0.5)

    chunked, whole = dens.CHUNK_ROWS, len(batch.users)
    try:
        if not torch.equal(scores(chunked), scores(whole)):  # also the warm-up
            log.error("the chunked scores differ from all rows at once: a bug, nothing timed")
            return 1
        chunked_s, whole_s = alternating(lambda: scores(chunked), lambda: scores(whole), args.repeats, device)
    finally:
        dens.CHUNK_ROWS = chunked
    shape = (len(batch.users), users_l.shape[1], batch.cands.shape[1], users_l.shape[-1])
    result = {**both_ways(args, device, ("chunked", chunked_s), ("whole", whole_s)),
              "shape_rows_layers_candidates_dim": list(shape), "chunk_rows": chunked}
    low, high = result["ratio_range"]
    atomic_write_json(args.out / f"dens-{args.dataset}-{device.type}.json", result)
    print(f"{args.dataset} on {device}, {result['threads']} thread(s), (B, L+1, M, d) = {shape}; medians of "
          f"{args.repeats}: chunks of {chunked} rows {result['chunked_s'] * 1000:.1f} ms, all rows at once "
          f"{result['whole_s'] * 1000:.1f} ms, ratio {result['chunked_over_whole']:.2f} "
          f"({low:.2f}-{high:.2f}); the same scores both ways")
    return 0


if __name__ == "__main__":
    sys.exit(main())
