"""Timings of the softmax-family losses: python -m bench.bench_losses [--negs 1000 256] [--max-batches 10]

  python -m bench.bench_losses --dataset-root ../shared/datasets --repeats 5 --threads 1

Two parts, each as ratios to a reference measured in the same run (the machine is shared and noisy), medians:
1. `paths`: the three ways module.losses.base.row_cosines scores N negatives per row (kernel: the numba
   kernel, CPU only; product: the whole-table product and a gather of the N scores; gather: the (B, N, d) rows
   gathered), on B rows x N random item ids over a random items x d table, forward and backward of a logsumexp
   over the scores; each repeat times every path once, one after the other, and the ratio is the median of the
   per-repeat ratios to the kernel (on a GPU, where the kernel does not run, to the product). The largest
   difference of each path's scores from the reference's checks they compute the same thing.
2. `epochs`: an epoch of each loss (loss.name softmax, bsl, psl, advinfonce on RNS with params.rns.n_negs N
   negatives per positive, drawn per batch) with the repository's own trainer (bench.bench_epoch.build, the
   model `model.name` names, LightGCN by default) against an epoch of RNS + BPR at the same settings (one
   negative per positive unless --bpr-negs; the BPR of conf/grids/loss-fidelity.yaml), epochs alternating, the
   ratio the median of the pairwise ratios (bench.bench_models.alternating); `cnsdiff+softmax` (SL on CNSDiff's
   negative and N - 1 uniform ones, params.cnsdiff.n_negs N) against CNSDiff + BPR. --max-batches cuts each epoch to
   its first batches (bench.bench_epoch.limit_batches), the draws included. AdvInfoNCE's epochs timed are its
   model epochs (its every adv_every-th epoch trains only the adversary, on the same scores). The L2 term of
   reg.form lightgcn or selfrec (the default on most presets) gathers and squares the layer-0 rows of all N
   negatives of every row, which can cost more than the loss; `--set reg.form=weight_decay` (the
   loss-fidelity grid's form) times the losses without it.
Prints a markdown table and writes it, with the numbers as JSON, to --out (losses-DATASET-DEVICE.md/.json).
"""
from __future__ import annotations

import argparse
import logging
import statistics
import sys
from typing import Any, Optional

import torch

from bench.bench_epoch import add_common_arguments, build, checked_base, median_time
from bench.bench_models import alternating
from module.losses.base import row_cosines
from util.device import resolve_device, set_threads
from util.io import atomic_write_json, atomic_write_text

REFERENCE = "bpr"
CONFIGS = {name: {"negative.sampler": "rns", "loss.name": name}
           for name in (REFERENCE, "softmax", "bsl", "psl", "advinfonce")}
# SL on CNSDiff's negatives (the official preset; docs/losses.md) against CNSDiff with BPR
CONFIGS["cnsdiff"] = {"negative.sampler": "cnsdiff", "loss.name": "bpr"}
CONFIGS["cnsdiff+softmax"] = {"negative.sampler": "cnsdiff", "loss.name": "softmax"}
REFERENCES = {"rns": REFERENCE, "cnsdiff": "cnsdiff"}  # per sampler: the BPR configuration a loss's epoch is divided by
LOSSES = {name: keys for name, keys in CONFIGS.items() if name not in REFERENCES.values()}  # what --configs chooses among


def sized(name: str, negs: int) -> dict[str, int]:
    """The key giving configuration `name` N negatives per positive: its sampler's n_negs."""
    return {f"params.{CONFIGS[name]['negative.sampler']}.n_negs": negs}
PATHS = ("kernel", "product", "gather")


def path_timings(rows: int, items: int, negs: int, dim: int, repeats: int, device: torch.device) -> dict[str, Any]:
    """Per path of row_cosines: median seconds of forward + backward of mean_b logsumexp_n(cos / 0.1) on (rows, negs)
    random ids over an (items, dim) table, the median per-repeat ratio to the reference path (the first: kernel,
    or product where the kernel does not run), and the largest |score - the reference's score|."""
    paths = PATHS if device.type == "cpu" else PATHS[1:]  # the numba kernel runs on host tensors only
    gen = torch.Generator().manual_seed(0)
    table = torch.randn(items, dim, generator=gen).to(device).requires_grad_()
    query = torch.randn(rows, dim, generator=gen).to(device).requires_grad_()
    ids = torch.randint(0, items, (rows, negs), generator=gen).to(device)

    def step(path: str) -> None:
        table.grad = query.grad = None
        torch.logsumexp(row_cosines(query, table, ids, path) / 0.1, dim=1).mean().backward()

    with torch.no_grad():
        scores = {p: row_cosines(query, table, ids, p) for p in paths}
    for p in paths:  # warm-up: numba compilation, the allocator
        step(p)
    times: dict[str, list[float]] = {p: [] for p in paths}
    for _ in range(repeats):
        for p in paths:
            times[p].append(median_time(lambda: step(p), 1, device))
    ref = paths[0]
    return {"reference": ref, "rows": rows, "items": items, "negs": negs, "dim": dim, "paths": {
        p: {"s": statistics.median(times[p]), "runs_s": [round(t, 5) for t in times[p]],
            "x_ref": statistics.median(t / r for t, r in zip(times[p], times[ref])),
            "max_abs_diff": float((scores[p] - scores[ref]).abs().max())} for p in paths}}


def epoch_timings(base: dict, losses: list[str], negs: int, bpr_negs: int, max_batches: int, repeats: int,
                  device: torch.device) -> dict[str, Any]:
    """Per loss: median epoch seconds with `negs` negatives per positive, the median epoch of its sampler's BPR
    reference alternating with it (RNS + BPR with bpr_negs; CNSDiff + BPR with its one), and the median of their
    pairwise ratios."""
    references: dict[str, Any] = {}
    out: dict[str, Any] = {"negs": negs, "bpr_negs": bpr_negs, "losses": {}}
    for name in losses:
        ref_name = REFERENCES[CONFIGS[name]["negative.sampler"]]
        if ref_name not in references:
            extra = sized(ref_name, bpr_negs) if ref_name == REFERENCE else {}
            references[ref_name] = build(ref_name, base, device, extra, max_batches, CONFIGS)
        reference = references[ref_name]
        out.update({"batch_size": reference.config.batch_size, "model": reference.config.model_name})
        rec = build(name, base, device, sized(name, negs), max_batches, CONFIGS)
        epoch_s, reference_s, ratio = alternating(rec, reference, repeats)
        out["losses"][name] = {"reference": ref_name, "epoch_s": epoch_s, "bpr_epoch_s": reference_s, "x_bpr": ratio,
                               "reg_form": rec.config.reg_form, "bpr_reg_form": reference.config.reg_form}
        del rec
    return out


def markdown(results: dict[str, Any]) -> str:
    """The tables of both parts."""
    lines = [f"device {results['device']}, {results['threads']} threads, medians of {results['repeats']} repeats"]
    for part in results.get("paths", []):
        ref = part["reference"]
        lines += ["", f"row_cosines: B={part['rows']} rows x N={part['negs']} negatives over {part['items']} x "
                      f"{part['dim']} items, forward + backward of a logsumexp; x {ref}: median per-repeat ratio",
                  "", f"| path | ms | x {ref} | max abs diff of the scores vs {ref} |", "|---|---|---|---|"]
        for p, r in part["paths"].items():
            lines.append(f"| {p} | {1000 * r['s']:.1f} | {r['x_ref']:.2f} | {r['max_abs_diff']:.1e} |")
    for part in results.get("epochs", []):
        batches = (f"the first {results['max_batches']} batches of an epoch" if results["max_batches"] > 0
                   else "a whole epoch")
        lines += ["", f"{part['model']} on {results['dataset']}, batch {part['batch_size']} (reg.form lightgcn and "
                      f"selfrec square the rows of all N negatives too), {batches}; N={part['negs']} "
                      f"negatives per positive (drawn per batch: RNS's, or CNSDiff's negative and N - 1 uniform ones) "
                      f"against the same sampler with BPR (RNS with {part['bpr_negs']} negative(s), CNSDiff with its "
                      f"one); x BPR: median of the ratios of alternating epochs",
                  "", "| loss | N | reg.form | epoch s | BPR reference (reg.form) | its epoch s | x BPR |",
                  "|---|---|---|---|---|---|---|"]
        for name, r in part["losses"].items():
            reference = "RNS + BPR" if r["reference"] == REFERENCE else "CNSDiff + BPR"
            lines.append(f"| {name} | {part['negs']} | {r['reg_form']} | {r['epoch_s']:.2f} | {reference} "
                         f"({r['bpr_reg_form']}) | {r['bpr_epoch_s']:.2f} | {r['x_bpr']:.2f} |")
    return "\n".join(lines) + "\n"


def main(argv: Optional[list[str]] = None) -> int:
    """Command line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_common_arguments(parser, "food", configs=LOSSES, dataset_root="../shared/datasets", threads=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--parts", nargs="+", choices=("paths", "epochs"), default=["paths", "epochs"])
    parser.add_argument("--negs", nargs="+", type=int, default=[1000], help="negatives per positive (N); several: "
                        "one table each (default 1000)")
    parser.add_argument("--bpr-negs", type=int, default=1, help="negatives per positive of the RNS + BPR reference")
    parser.add_argument("--max-batches", type=int, default=0, help="time only the first batches of each epoch "
                        "(0: whole epochs)")
    parser.add_argument("--rows", type=int, default=1024, help="paths: rows B (default 1024)")
    parser.add_argument("--items", type=int, default=13874, help="paths: items I (default 13874, as ir-cd-pop)")
    parser.add_argument("--dim", type=int, default=64, help="paths: embedding size d (default 64)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    if min(args.negs + [args.bpr_negs, args.repeats, args.threads, args.rows, args.items, args.dim]) < 1:
        logging.getLogger(__name__).error("--negs, --bpr-negs, --repeats, --threads, --rows, --items and --dim must "
                                          "be >= 1")
        return 2
    set_threads(args.threads)  # torch's and numba's (the kernel and the draws)
    device = resolve_device(args.device)
    base: Optional[dict] = {"dataset": args.dataset, "dataset.root": args.dataset_root, "device": args.device,
                            "max.epoch": 120, "fhn.probe": 0}
    if "epochs" in args.parts:
        base = checked_base(args, base, None, {name: {**CONFIGS[name], **sized(name, max(args.negs))}
                                               for name in args.configs})
        if base is None:
            return 2
    results: dict[str, Any] = {"device": str(device), "threads": torch.get_num_threads(), "dataset": args.dataset,
                               "set": args.overrides, "repeats": args.repeats, "max_batches": args.max_batches}
    if "paths" in args.parts:
        results["paths"] = [path_timings(args.rows, args.items, n, args.dim, args.repeats, device) for n in args.negs]
    if "epochs" in args.parts:
        assert base is not None
        results["epochs"] = [epoch_timings(base, args.configs, n, args.bpr_negs, args.max_batches, args.repeats,
                                           device) for n in args.negs]
    text = markdown(results)
    print(text, end="")
    stem = f"losses-{args.dataset}-{device.type}"
    atomic_write_text(args.out / f"{stem}.md", text)
    atomic_write_json(args.out / f"{stem}.json", results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
