"""Epoch and evaluation timings, with the time split, on a dataset (default Food).

  python -m bench.bench_epoch --dataset-root ../shared/datasets --repeats 5 --threads 2

Per sampler configuration: median wall time of a training epoch (and its sampling part), of one full
evaluation of test_ood, of one false-hard-negative probe (fhn.probe pairs), and a per-phase split measured
on an instrumented copy of the batch loop (sampling, propagation forward, CNSDiff's candidate chains and
diffusion loss, ADAR's t* and generation, rest of the sampler (for ADAR: its denoiser's training forward),
loss + backward, optimiser step). ADAR is timed after its warm-up (warmup_epochs 0), i.e. while
generating. `--set KEY=VALUE` applies a config key to every configuration. References measured in the
same run: the RNS epoch (each epoch of a configuration alternates with an RNS epoch, and the ratio is the
median of those pairs, so a drift of the machine's speed over minutes does not enter it) and the
matrix-multiply throughput of this machine, which gives the floor of CNSDiff's candidate chains
(4 * rows * d * hidden FLOP per denoiser call) and of ADAR's noise network (its training forward and
backward and ceil(t* / stride) calls per row of generation, from the t* of the measured batches): time
that no implementation of the same products on this machine saves. Timings are medians; the machine is
shared and noisy.
"""
from __future__ import annotations

import argparse
import logging
import statistics
import sys
import time
from pathlib import Path
from typing import Callable, Optional

import torch

from data.dataset import load_data
from data.loader import DataFileError
from model import get_model_class
from model.graph.LightGCN import LightGCN
from module.samplers.base import TrainBatch
from conf.config import parse_override, resolve, set_key
from util.typing_coerce import ConfigError
from util.device import resolve_device
from util.io import atomic_write_json
from util.seed import seed_everything

CONFIGS = {
    "rns": {"negative.sampler": "rns"},
    "pns": {"negative.sampler": "pns"},
    "dns": {"negative.sampler": "dns"},
    "dns_mn": {"negative.sampler": "dns_mn"},
    "mixgcf": {"negative.sampler": "mixgcf"},
    "dens": {"negative.sampler": "dens"},
    "ahns": {"negative.sampler": "ahns"},
    "adar": {"negative.sampler": "adar", "params.adar.warmup_epochs": 0},
    "cnsdiff-official": {"negative.sampler": "cnsdiff", "params.cnsdiff.preset": "official"},
    "cnsdiff-paper": {"negative.sampler": "cnsdiff", "params.cnsdiff.preset": "paper"},
}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def median_time(fn: Callable[[], object], repeats: int, device: torch.device) -> float:
    times = []
    for _ in range(repeats):
        _sync(device)
        t0 = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def alternating(first: Callable[[], object], second: Callable[[], object], repeats: int,
                device: torch.device) -> tuple[list[float], list[float]]:
    """Seconds of first() and of second() in each repeat, one right after the other, which goes first alternating
    from repeat to repeat (this machine's speed drifts)."""
    times: tuple[list[float], list[float]] = ([], [])
    for repeat in range(repeats):
        for fn, out in ((first, times[0]), (second, times[1]))[:: 1 if repeat % 2 == 0 else -1]:
            out.append(median_time(fn, 1, device))
    return times


def both_ways(args: argparse.Namespace, device: torch.device, first: tuple[str, list[float]],
              second: tuple[str, list[float]]) -> dict:
    """The head of a both-ways benchmark's record: dataset, device, threads, repeats, each way's median seconds
    (NAME_s), the median of the per-repeat ratios first / second (FIRST_over_SECOND) and their range."""
    (a, times_a), (b, times_b) = first, second
    ratios = [x / y for x, y in zip(times_a, times_b)]
    return {"dataset": args.dataset, "device": str(device), "threads": torch.get_num_threads(),
            "repeats": args.repeats, f"{a}_s": statistics.median(times_a), f"{b}_s": statistics.median(times_b),
            f"{a}_over_{b}": statistics.median(ratios), "ratio_range": [min(ratios), max(ratios)]}


def first_batch(rec: LightGCN) -> TrainBatch:
    """The first batch of an epoch with the model's embeddings and layers (no gradient), as a sampler gets it."""
    users, pos, cands = rec.epoch_ids().batch(0, rec.config.batch_size)
    with torch.no_grad():
        user_all, item_all, layers = rec.model.propagate(True)
    return TrainBatch(users, pos, cands, 1, rec.config.max_epoch, user_all, item_all, layers)


def one_config_bench(argv: Optional[list[str]], description: str,
                     name: str) -> tuple[argparse.Namespace, torch.device, Optional[LightGCN]]:
    """A benchmark of one configuration of CONFIGS: its command line (add_timing_arguments and --device) parsed,
    the threads set and the recommender built after a warm-up batch (None after one logged line when a key, value or
    the dataset is bad)."""
    parser = argparse.ArgumentParser(description=description)
    add_timing_arguments(parser)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    args.configs = [name]
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    base = checked_base(args, {"dataset": args.dataset, "dataset.root": args.dataset_root, "device": args.device})
    return args, device, (build(name, base, device, max_batches=1) if base is not None else None)


def matmul_gflops(device: torch.device, rows: int = 6144, d: int = 64, repeats: int = 50, width: int = 0) -> float:
    """Measured throughput of (rows x d) @ (d x width) products (width d by default: the shape of CNSDiff's
    chain layers; 2048 x 256 @ 256 x 256 is the widest layer of ADAR's noise network)."""
    width = width or d
    x, w = torch.randn(rows, d, device=device), torch.randn(d, width, device=device)
    out = torch.empty(rows, width, device=device)  # preallocated: time the arithmetic, not the allocator

    def twenty() -> None:
        for _ in range(20):
            torch.mm(x, w, out=out)
    twenty()
    seconds = median_time(twenty, repeats, device) / 20
    return 2 * rows * d * width / seconds / 1e9


def adar_noise_net_gflop(rows: int, t_star: torch.Tensor, dim: int, hidden: int, stride: int) -> dict[str, float]:
    """GFLOP per batch of ADAR's noise network (products only): its training forward and backward on every
    row, and the reverse generation, ceil(t* / stride) network calls per row (gen_mode reverse)."""
    per_call = dim * hidden + hidden * hidden + hidden * dim  # multiply-adds per row of one call from z
    forward = rows * (per_call + dim * hidden)  # training forward also multiplies the user part
    backward = rows * (per_call + dim * hidden) + rows * (hidden * hidden + hidden * dim)  # weights + inputs
    calls = float(torch.ceil(t_star.float() / stride).sum())
    return {"train_forward": 2 * forward / 1e9, "train_backward": 2 * backward / 1e9,
            "generation": 2 * calls * per_call / 1e9, "mean_calls_per_row": calls / max(1, len(t_star)),
            "hidden": hidden}


def phase_split(rec: LightGCN, n_batches: int) -> dict[str, float]:
    """Median milliseconds per batch of each phase: the trainer's own batch_loss, with timers wrapped
    around the propagation, the sampler, its candidate chains and its diffusion loss."""
    device, b = rec.device, rec.config.batch_size
    spent: dict[str, float] = {}

    def wrap(obj: object, attr: str, name: str) -> None:
        original = getattr(obj, attr)

        def timed(*args, **kwargs):
            _sync(device)
            t0 = time.perf_counter()
            out = original(*args, **kwargs)
            _sync(device)
            spent[name] = spent.get(name, 0.0) + time.perf_counter() - t0
            return out
        setattr(obj, attr, timed)

    wrap(rec.model, "propagate", "propagation_forward")
    wrap(rec.sampler, "negatives", "sampler_total")
    if rec.sampler.name == "cnsdiff":
        wrap(rec.sampler, "generate", "chains")
        wrap(rec.sampler.diffusion, "training_losses", "diffusion_loss")
    t_stars: list[torch.Tensor] = []
    if rec.sampler.name == "adar":
        wrap(rec.sampler, "generate", "generation")
        wrap(rec.sampler, "transition", "t_star")
        transition = rec.sampler.transition

        def keep_t(*args, **kwargs):
            out = transition(*args, **kwargs)
            t_stars.append(out[0].detach().cpu())
            return out
        rec.sampler.transition = keep_t
    t0 = time.perf_counter()
    users, pos, negs = rec.epoch_sampler.epoch()
    users, pos, negs = (torch.from_numpy(a).to(device) for a in (users, pos, negs))
    _sync(device)
    sample_epoch = time.perf_counter() - t0
    phases: dict[str, list[float]] = {}
    for k in range(min(n_batches, len(users) // b)):
        sl = slice(k * b, (k + 1) * b)
        spent.clear()
        _sync(device)
        t0 = time.perf_counter()
        loss, _ = rec.batch_loss(users[sl], pos[sl], negs[sl], 0)
        _sync(device)
        t1 = time.perf_counter()
        rec.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        _sync(device)
        t2 = time.perf_counter()
        rec.optimizer.step()
        _sync(device)
        t3 = time.perf_counter()
        sampler_rest = spent["sampler_total"] - sum(spent.get(k, 0.0) for k in
                                                    ("chains", "diffusion_loss", "generation", "t_star"))
        loss_rest = (t1 - t0) - spent["propagation_forward"] - spent["sampler_total"]
        for name, value in [("propagation_forward", spent["propagation_forward"]),
                            ("chains", spent.get("chains")), ("diffusion_loss", spent.get("diffusion_loss")),
                            ("generation", spent.get("generation")), ("t_star", spent.get("t_star")),
                            ("sampler_rest", sampler_rest), ("loss_and_backward", loss_rest + t2 - t1),
                            ("optimizer_step", t3 - t2)]:
            if value is not None:
                phases.setdefault(name, []).append(value)
    result = {name: 1000 * statistics.median(v) for name, v in phases.items()}
    result["sampling_per_epoch"] = 1000 * sample_epoch
    if t_stars:
        p = rec.sampler.params
        per_batch = [adar_noise_net_gflop(b, t, rec.config.embedding_size, p.hidden, p.reverse_stride) for t in t_stars]
        result["adar_gflop"] = {k: statistics.mean(f[k] for f in per_batch) for k in per_batch[0]}  # type: ignore[assignment]
    return result


def limit_batches(rec: LightGCN, n: int) -> None:
    """Make each of rec's training epochs its first n batches (n <= 0: the whole epoch): the shuffled pairs are cut
    before any negative is drawn, so an epoch of the trainer's own train_epoch draws and trains only those."""
    if n <= 0:
        return
    rows, shuffled = n * rec.config.batch_size, rec.epoch_sampler.shuffled

    def first() -> tuple:
        users, items = shuffled()
        return users[:rows], items[:rows]
    rec.epoch_sampler.shuffled = first  # type: ignore[method-assign]  # epoch() calls it too


def build(name: str, base: dict, device: torch.device, extra: Optional[dict] = None, max_batches: int = 0,
          configs: Optional[dict] = None) -> LightGCN:
    """A recommender of one configuration of `configs` (default CONFIGS, the samplers) on the model `model.name`
    names (LightGCN by default), seeded, its epochs cut to max_batches batches (0: whole), after a warm-up epoch
    (numba compilation, allocator)."""
    cfg = resolve({**base, **(configs or CONFIGS)[name], **(extra or {})})
    data = load_data(**cfg.data_arguments())
    seed_everything(cfg.seed)
    rec = get_model_class(cfg.model_name)(cfg, data, device, Path("."))
    rec.build()
    limit_batches(rec, max_batches)
    rec.train_epoch(0)
    return rec


def bench_config(name: str, base: dict, repeats: int, device: torch.device, reference: LightGCN) -> dict:
    """Timings of one sampler configuration. Its epochs alternate with epochs of the RNS reference, so each
    ratio compares two epochs measured seconds apart (the machine's speed drifts over minutes)."""
    rec = build(name, base, device)
    cfg = rec.config
    epochs, ratios, reference_s, sample_s = [], [], [], []
    for _ in range(repeats):
        ref = reference.train_epoch(1)
        e = rec.train_epoch(1)
        epochs.append(e["train_s"] + e["sample_s"])
        sample_s.append(e["sample_s"])
        reference_s.append(ref["train_s"] + ref["sample_s"])
        ratios.append(epochs[-1] / reference_s[-1])
    evaluator = rec.evaluators.get("test_ood") or list(rec.evaluators.values())[-1]
    with torch.no_grad():
        user_all, item_all = rec.model()
    eval_s = median_time(lambda: evaluator.evaluate(user_all, item_all), repeats, device)
    fhn_s = median_time(lambda: rec.fhn.measure(rec.model, rec.sampler, rec.epoch_sampler, 1, cfg.max_epoch,
                                                 device), repeats, device)
    n_batches = len(rec.epoch_sampler) // cfg.batch_size
    phases = phase_split(rec, min(n_batches, 3 + repeats * 4))
    flop = phases.pop("adar_gflop", None)
    return {
        "epoch_s": statistics.median(epochs),
        "epoch_runs_s": [round(e, 3) for e in epochs],
        "rns_epoch_s": statistics.median(reference_s),
        "x_rns": statistics.median(ratios),
        "x_rns_runs": [round(r, 3) for r in ratios],
        "sample_s": statistics.median(sample_s),
        "eval_test_ood_s": eval_s,
        "fhn_probe_s": fhn_s,
        "batches_per_epoch": n_batches + (1 if len(rec.epoch_sampler) % cfg.batch_size else 0),
        "phases_ms_per_batch": phases,
        **({"noise_net": flop} if flop else {}),
    }


def at_least_one(text: str) -> int:
    """An argparse type: an integer >= 1 (a count of repeats or threads), else argparse's one-line error, exit 2."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, got {text!r}")
    return value


def add_timing_arguments(parser: argparse.ArgumentParser, dataset: str = "food", dataset_root: str = "dataset",
                         threads: int = 1) -> None:
    """The options every benchmark takes: dataset, dataset root, repeats, threads, out and --set."""
    parser.add_argument("--dataset", default=dataset)
    parser.add_argument("--dataset-root", default=dataset_root)
    parser.add_argument("--repeats", type=at_least_one, default=5)
    parser.add_argument("--threads", type=at_least_one, default=threads)
    parser.add_argument("--out", type=Path, default=Path("results/bench"))
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="a config key for every configuration (e.g. params.adar.reverse_stride=10); repeatable")


def add_common_arguments(parser: argparse.ArgumentParser, dataset: str, configs: Optional[dict] = None,
                         dataset_root: str = "dataset", threads: int = 2) -> None:
    """The options every epoch benchmark takes: those of add_timing_arguments and the configurations of `configs`
    (default CONFIGS)."""
    add_timing_arguments(parser, dataset, dataset_root, threads)
    parser.add_argument("--configs", nargs="+", choices=list(configs or CONFIGS), default=list(configs or CONFIGS))


def checked_base(args: argparse.Namespace, base: dict, extra: Optional[dict] = None,
                 configs: Optional[dict] = None) -> Optional[dict]:
    """base with the --set keys, once every configuration of args.configs (in `configs`, default CONFIGS; with
    `extra`) resolves and the data loads; else None after one logged line (a bad key, value or dataset is exit
    status 2, before anything is timed)."""
    try:
        base = dict(base)
        for text in args.overrides:
            set_key(base, *parse_override(text))
        for name in args.configs:
            resolve({**base, **(configs or CONFIGS)[name], **(extra or {})})
        load_data(**resolve({**base, **CONFIGS["rns"]}).data_arguments())
    except (ConfigError, DataFileError, FileNotFoundError) as exc:
        logging.getLogger(__name__).error("%s", exc)
        return None
    return base


def main(argv: Optional[list[str]] = None) -> int:
    """Command line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_common_arguments(parser, "food")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    base = checked_base(args, {"dataset": args.dataset, "dataset.root": args.dataset_root, "device": args.device,
                               "max.epoch": 120})
    if base is None:
        return 2
    gflops = matmul_gflops(device)
    results = {"device": str(device), "threads": torch.get_num_threads(), "dataset": args.dataset,
               "set": args.overrides, "repeats": args.repeats, "matmul_gflops": gflops, "configs": {}}
    reference = build("rns", base, device)
    for name in args.configs:
        results["configs"][name] = bench_config(name, base, args.repeats, device, reference)
    dim, hidden, batch = 64, 64, 2048
    print(f"device {device}, {results['threads']} threads, matmul {gflops:.0f} GFLOP/s, medians of {args.repeats}; "
          f"x RNS: median ratio of each epoch to the RNS epoch measured just before it")
    print("| config | epoch s | RNS epoch s | x RNS (range) | eval test_ood s | FHN probe s (% of its epoch) | phases ms/batch |")
    print("|---|---|---|---|---|---|---|")
    for name, r in results["configs"].items():
        ratio = f"{r['x_rns']:.2f} ({min(r['x_rns_runs']):.2f}-{max(r['x_rns_runs']):.2f})"
        phases = ", ".join(f"{k} {v:.1f}" for k, v in r["phases_ms_per_batch"].items())
        probe = f"{r['fhn_probe_s']:.3f} ({100 * r['fhn_probe_s'] / r['epoch_s']:.1f}%)"
        print(f"| {name} | {r['epoch_s']:.2f} | {r['rns_epoch_s']:.2f} | {ratio} | {r['eval_test_ood_s']:.3f} | "
              f"{probe} | {phases} |")
        if "chains" in r["phases_ms_per_batch"]:
            calls = 20 * 3 if name.endswith("official") else 18 + 14 + 10
            flop = 4 * batch * dim * hidden * calls
            floor_ms = flop / (gflops * 1e9) * 1000
            r["chain_gflop_per_batch"] = flop / 1e9
            r["chain_floor_ms"] = floor_ms
            print(f"|   chains of {name}: {flop / 1e9:.2f} GFLOP/batch, matmul floor {floor_ms:.1f} ms, "
                  f"measured {r['phases_ms_per_batch']['chains']:.1f} ms "
                  f"({r['phases_ms_per_batch']['chains'] / floor_ms:.1f}x the floor) | | | |")
        if "noise_net" in r:
            net = r["noise_net"]
            width = net["hidden"]
            wide = matmul_gflops(device, rows=batch, d=width, width=width)
            total = net["train_forward"] + net["train_backward"] + net["generation"]
            floor_ms = total / wide * 1000
            rns_batch_ms = 1000 * r["rns_epoch_s"] / r["batches_per_epoch"]
            net.update(gflop_per_batch=total, matmul_gflops=wide, floor_ms=floor_ms)
            print(f"|   noise network of {name}: {total:.2f} GFLOP/batch (training forward {net['train_forward']:.2f}, "
                  f"backward {net['train_backward']:.2f}, generation {net['generation']:.2f} at "
                  f"{net['mean_calls_per_row']:.1f} calls per row); at the measured {wide:.0f} GFLOP/s of "
                  f"{batch}x{width} @ {width}x{width} products: {floor_ms:.1f} ms per batch on top of everything "
                  f"RNS does, so at best {1 + floor_ms / rns_batch_ms:.2f}x RNS | | | |")
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(args.out / f"epoch-{args.dataset}-{device.type}.json", results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
