"""The dry run's estimate of the CPU time a grid's remaining cells need, from the finished run records under
results/grids (docs/grids.md, Resume), and the CPU time the grid's own finished records took."""
from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

import numpy as np

from bench.cells import Cell, to_run
from conf.config import REPO
from data.loader import read_interactions
from data.presets import get_preset
from model import is_closed_form

if TYPE_CHECKING:
    from bench.runner import GridRunner


def _kind(keys: dict[str, Any]) -> tuple[str, str, str]:
    """What a run's cost depends on most: dataset, model, sampler (with CNSDiff's preset, and the loss where it is
    not BPR: a softmax-family loss scores hundreds of negatives per positive)."""
    sampler = str(keys.get("negative.sampler", "cnsdiff"))
    preset = keys.get("params.cnsdiff.preset") or keys.get("params.preset")
    if sampler == "cnsdiff":
        sampler += f".{preset or 'official'}"
    loss = str(keys.get("loss.name", "bpr"))
    if loss != "bpr":
        sampler += f"+{loss}"
    model = str(keys.get("model.name", "LightGCN"))
    if is_closed_form(model):  # fitted once: no sampler, no epochs
        sampler = "-"
    return str(keys.get("dataset", "")), model, sampler


def _bpr_kind(kind: tuple[str, str, str]) -> tuple[str, str, str]:
    """The kind of the same dataset, model and sampler trained with BPR ("rns+softmax" -> "rns")."""
    return kind[0], kind[1], kind[2].split("+", 1)[0]


def _units(keys: dict[str, Any]) -> int:
    """Negatives per positive of a run's sampler (its params.<sampler>.n_negs, or params.n_negs; 1 without) times
    its embedding dimension: what a loss's cost per training row grows with."""
    sampler = str(keys.get("negative.sampler", "cnsdiff"))
    negatives = int(keys.get(f"params.{sampler}.n_negs", keys.get("params.n_negs", 1)) or 1)
    return negatives * int(keys.get("embedding.size", 64) or 64)


def run_records(root: Path) -> list[dict[str, Any]]:
    """Every finished run under root/*/runs/: its grid folder, kind and CPU seconds (the median epoch's sampling
    and training times the epochs run, plus the median evaluation times the evaluations)."""
    records = []
    for metrics_path in sorted(Path(root).glob("*/runs/**/metrics.json")):
        try:
            metrics = json.loads(metrics_path.read_text())
            config = json.loads((metrics_path.parent / "config.json").read_text())
        except (OSError, ValueError):
            continue
        keys = {**config, **(config.get("input") or {})}
        t, epochs = metrics.get("median_epoch_seconds") or {}, metrics["selection"]["epochs_run"]
        every = int(config.get("eval.every", 1) or 1)
        evaluations = -(-epochs // every)
        training = (t.get("sample_s", 0.0) + t.get("train_s", 0.0)) * epochs
        seconds = training + t.get("eval_s", 0.0) * evaluations
        data = metrics.get("data") or {}
        size = (data["users"], data["items"], data["train"]) if all(k in data for k in ("users", "items", "train")) else None
        records.append({"grid": metrics_path.relative_to(root).parts[0], "kind": _kind(keys), "seconds": seconds,
                        "units": _units(keys),
                        "epochs": epochs, "best": metrics["selection"]["epoch"], "epoch_s": seconds / max(1, epochs),
                        "train_epoch_s": training / max(1, epochs), "eval_epoch_s": (seconds - training) / max(1, epochs),
                        "lr": float(keys.get("learning.rate", 0.01)), "size": size})
    return records


def scaled_epoch_seconds(similar: list[dict[str, Any]], size: tuple[int, int, int]) -> tuple[Optional[float], str]:
    """(seconds per epoch on a dataset of `size` (users, items, training rows), the dataset it was scaled from),
    from the records of the same model and sampler on the recorded dataset with the most training rows: training
    time times the ratio of rows x (users + items) (every batch propagates the whole graph), evaluation time
    times the ratio of users x items (every user scores every item). (None, "") without sized records."""
    sized = [r for r in similar if r.get("size")]
    if not sized:
        return None, ""
    biggest = max(sized, key=lambda r: r["size"][2])
    ref = [r for r in sized if r["kind"][0] == biggest["kind"][0]]
    users, items, rows = biggest["size"]
    train = float(np.median([r["train_epoch_s"] for r in ref])) * (size[2] * (size[0] + size[1])) / (rows * (users + items))
    evaluation = float(np.median([r["eval_epoch_s"] for r in ref])) * (size[0] * size[1]) / (users * items)
    return train + evaluation, biggest["kind"][0]


def _per_epoch(kind: tuple[str, str, str], lr: float, records: list[dict[str, Any]],
               sizes: Optional[dict[str, tuple[int, int, int]]]) -> tuple[Optional[float], list[dict[str, Any]]]:
    """(seconds per epoch of a kind, the records it was taken from): its own dataset's runs (those at the learning
    rate where there are any), else another dataset's runs of the same model and sampler scaled by size."""
    similar = [r for r in records if r["kind"] == kind]
    if similar:
        similar = [r for r in similar if r["lr"] == lr] or similar
        return float(np.median([r["epoch_s"] for r in similar])), similar
    similar = [r for r in records if r["kind"][1:] == kind[1:]]
    similar = [r for r in similar if r["lr"] == lr] or similar
    return (scaled_epoch_seconds(similar, sizes[kind[0]])[0] if sizes and kind[0] in sizes else None), similar


def loss_seconds_per_negative(records: list[dict[str, Any]], sampler: str) -> tuple[Optional[float], str]:
    """(training seconds a loss adds per training row, negative and embedding dimension over BPR with the same
    sampler, where it was measured): for `sampler` as _kind writes it with its loss ("rns+softmax"), from the
    first dataset and model (sorted) with runs of both, the difference of their median training epochs divided
    by rows x the loss runs' negatives per positive x dimension; without such a pair, from the same loss on
    another sampler, RNS first (scoring the negatives is the loss's cost: "cnsdiff.official+softmax" takes
    "rns+softmax"'s).
    (None, "") without any."""
    loss = sampler.split("+", 1)[1]
    kinds = sorted({r["kind"] for r in records if r["kind"][2].endswith(f"+{loss}")},
                   key=lambda k: (k[2] != sampler, not k[2].startswith("rns+"), k[2], k[:2]))
    for kind in kinds:
        measured = [r for r in records if r["kind"] == kind and r.get("size")]
        bpr = [r for r in records if r["kind"] == _bpr_kind(kind)]
        if measured and bpr:
            extra = (float(np.median([r["train_epoch_s"] for r in measured]))
                     - float(np.median([r["train_epoch_s"] for r in bpr])))
            where = f"{kind[0]} ({kind[1]}{'' if kind[2] == sampler else ', ' + kind[2]})"
            return max(0.0, extra) / (measured[0]["size"][2] * float(np.median([r["units"] for r in measured]))), where
    return None, ""


def _loss_added(cell: Cell, kind: tuple[str, str, str], lr: float, records: list[dict[str, Any]],
                sizes: Optional[dict[str, tuple[int, int, int]]]) -> tuple[Optional[float], list[dict[str, Any]]]:
    """(seconds per epoch, records of its epochs) of a non-BPR loss without a run on its model: its sampler's BPR
    epoch plus the loss's measured seconds per row, negative and dimension (loss_seconds_per_negative) times the
    cell's; its epochs those of the BPR runs."""
    per_epoch, similar = _per_epoch(_bpr_kind(kind), lr, records, sizes)
    unit = loss_seconds_per_negative(records, kind[2])[0]
    own = [r["size"][2] for r in similar if r["kind"][0] == kind[0] and r.get("size")]
    rows = sizes[kind[0]][2] if sizes and kind[0] in sizes else (own[0] if own else None)
    if per_epoch is None or unit is None or rows is None:
        return None, []
    return per_epoch + unit * rows * _units(cell.keys), similar


def loss_transferred(kind: tuple[str, str, str], records: list[dict[str, Any]]) -> bool:
    """Whether a kind's estimate comes from _loss_added: a non-BPR loss with no run of its model and sampler."""
    return "+" in kind[2] and not any(r["kind"][1:] == kind[1:] for r in records)


def estimate_seconds(cell: Cell, records: list[dict[str, Any]],
                     sizes: Optional[dict[str, tuple[int, int, int]]] = None) -> Optional[float]:
    """CPU seconds a cell is expected to take: the median seconds per epoch of the finished runs of its kind
    (dataset, model, sampler; those at its learning rate where there are any) times the epochs it should run:
    their median selected epoch plus its own patience (times eval.every), at least its early_stop.min_epochs, at
    most its max.epoch (all of them without early stopping); a `short` cell only the epochs after its last
    (from its own selected epoch; without its checkpoint it runs again, whole). On a dataset without a run of its
    kind but with its size in `sizes`, the seconds per epoch are scaled from another dataset's runs of the same
    model and sampler (scaled_epoch_seconds); a loss without any run on its model and sampler adds its measured
    cost per negative to the sampler's BPR epochs (_loss_added). None when none of these is possible."""
    kind = _kind(cell.keys)
    lr = float(cell.keys.get("learning.rate", 0.01))
    if loss_transferred(kind, records):
        per_epoch, similar = _loss_added(cell, kind, lr, records, sizes)
    else:
        per_epoch, similar = _per_epoch(kind, lr, records, sizes)
    if per_epoch is None:
        return None
    if kind[2] == "-":
        return per_epoch
    limit = int(cell.keys.get("max.epoch", 120))
    patience = int(cell.keys.get("early_stop.patience", 10)) * int(cell.keys.get("eval.every", 1))
    best, done, run = float(np.median([r["best"] for r in similar])), 0, cell.run_dir()
    if cell.state() == "short" and (run / "checkpoint.pt").is_file():  # continues from its last epoch
        selection = json.loads((run / "metrics.json").read_text())["selection"]
        best, done = float(selection["epoch"]), int(selection["epochs_run"])
    epochs = min(limit, max(float(cell.keys.get("early_stop.min_epochs", 0)), best + patience)) if patience > 0 else limit
    halt = int(cell.keys.get("early_stop.halt_after", 0) or 0)
    epochs = min(epochs, halt) if halt > 0 else epochs
    return per_epoch * max(0.0, epochs - done)


def dataset_size(runner: GridRunner, dataset: str) -> tuple[int, int, int]:
    """(users, items, rows) of a dataset's training file, as the cost estimate scales by them."""
    preset = get_preset(dataset)
    raw = read_interactions(runner.root_of(dataset) / preset.name / preset.train, preset.format)
    return len(set(raw.users)), len(set(raw.items)), len(raw.users)


def _full_rule_estimates(cells: list[Cell], records: list[dict[str, Any]],
                         sizes: dict[str, tuple[int, int, int]]) -> list[Optional[float]]:
    """Each cell's estimate under the full stopping rule (a halving's rung lifted); None where no record covers it."""
    return [estimate_seconds(replace(c, keys={**c.keys, "early_stop.halt_after": 0}, halted_at=None), records, sizes)
            for c in cells]


def _best_other_range(runner: GridRunner, dataset: str, first: list[Cell], records: list[dict[str, Any]],
                      sizes: dict[str, tuple[int, int, int]]) -> tuple[float, float]:
    """(least, most) CPU seconds of the power seeds that the best other method of `dataset` will add, before it is
    named: each eligible method's extra seeds times the mean full-rule estimate of its first-seed cells; the least
    is the cheapest method chosen once for every protocol, the most the dearest with another choice per protocol."""
    grid = runner.grid
    costs = []
    for method in dict.fromkeys(c.method for c in first if c.dataset == dataset):
        if method in grid.power.methods or method in grid.deferred:
            continue
        extra = len(grid.seeds_for(dataset, method, True)) - len(grid.seeds_for(dataset, method, False))
        estimates = _full_rule_estimates([c for c in first if c.dataset == dataset and c.method == method], records,
                                         sizes)
        costs.append(extra * float(np.mean([e or 0.0 for e in estimates])))
    if not costs:
        return 0.0, 0.0
    return min(costs), max(costs) * len(grid.protocols)


def cost_lines(runner: GridRunner, datasets: list[str], retry_failed: bool, jobs: int,
               records_root: Path = REPO / "results" / "grids") -> list[str]:
    """The dry run's estimate of the CPU time the remaining cells need, from the committed run records (scaled by
    size from another dataset's where a dataset has none, a loss without a run on its model from its sampler's BPR
    runs and the loss's measured cost per negative), and the CPU time the grid's own finished records took."""
    records = run_records(records_root)
    first, later, choices = runner.plan(datasets)
    # the datasets where a cell to run, or a first-seed cell whose later seeds wait, has no record of the kind its
    # epochs come from (its own; its sampler's BPR for a loss without a run on its model) but another dataset has runs
    # of that model and sampler: their sizes let those cells be scaled from those runs (a dataset's first records, of
    # one method, must not leave its other methods uncounted)
    recorded = {r["kind"] for r in records}
    elsewhere = {r["kind"][1:] for r in records}
    unrecorded: dict[str, int] = {}
    for c in first + [c for c in later if to_run(c.state(), retry_failed)]:
        kind = _kind(c.keys)
        kind = _bpr_kind(kind) if loss_transferred(kind, records) else kind
        if kind not in recorded and kind[1:] in elsewhere:
            unrecorded[c.dataset] = unrecorded.get(c.dataset, 0) + 1
    sizes = {d: dataset_size(runner, d) for d in datasets if d in unrecorded}
    known, unknown = 0.0, []
    transferred: dict[str, tuple[int, float]] = {}  # loss kind -> (cells, seconds) that _loss_added estimated
    for c in first + later:
        if not to_run(c.state(), retry_failed):
            continue
        seconds = estimate_seconds(c, records, sizes)
        if seconds is None:
            unknown.append(c.id)
        else:
            known += seconds
            kind = _kind(c.keys)
            if loss_transferred(kind, records):
                cells, total = transferred.get(kind[2], (0, 0.0))
                transferred[kind[2]] = (cells + 1, total + seconds)
    lines = [f"estimated CPU time of the listed cells to run: {known / 3600:.1f} h (about {known / 3600 / jobs:.1f} h "
             f"at --jobs {jobs}), from {len(records)} finished run records under results/grids"]
    for dataset, size in sizes.items():
        lines.append(f"  {dataset}: {unrecorded[dataset]} cell(s) of a method without a run there: their epochs are scaled "
                     f"by size (users {size[0]}, items {size[1]}, training rows {size[2]}) from the largest recorded "
                     f"dataset's runs of the same method")
    for sampler, (count, seconds) in sorted(transferred.items()):
        lines.append(f"  {count} cell(s) of {sampler} ({seconds / 3600:.1f} h) have no run on their model: their sampler's "
                     f"BPR epochs (and epoch count) plus the loss's extra seconds per row, negative and dimension measured on "
                     f"{loss_seconds_per_negative(records, sampler)[1]}")
    if unknown:
        lines.append(f"  {len(unknown)} cell(s) of a kind with no record are not counted, e.g. {unknown[0]}")
    waiting = [k for k, v in choices.items() if all(x is None for x in v.values())]
    power = runner.grid.power
    if waiting:
        extra_min = extra_max = 0.0
        blind = []  # pairs whose cells have no estimate: they add nothing to the range
        for key in waiting:
            dataset, method = key.split("/", 1)
            cells = [c for c in first if c.dataset == dataset and c.method == method]
            powered = power is not None and method in power.methods
            seeds = len(runner.grid.seeds_for(dataset, method, powered)) - 1
            estimates = _full_rule_estimates(cells, records, sizes)
            if any(e is None for e in estimates):
                blind.append(key)
            per = [e or 0.0 for e in estimates]
            mean = float(np.mean(per)) if per else 0.0
            extra_min += seeds * mean
            extra_max += seeds * mean * min(len(cells), len(runner.grid.protocols))
            if any(c.halted_at for c in cells):  # the kept candidates go on from the rung to the full rule
                more = mean - float(np.mean([estimate_seconds(c, records, sizes) or 0.0 for c in cells]))
                keep = runner.grid.halving.keep
                extra_min += keep * more
                extra_max += min(len(cells), keep * len(runner.grid.protocols)) * more
        lines.append(f"  the later seeds of {len(waiting)} pair(s) (and the kept candidates of a halving) are not listed "
                     f"yet: +{extra_min / 3600:.1f} h "
                     f"(one choice for every protocol) to +{extra_max / 3600:.1f} h (a different one per protocol)")
        if blind:
            lines.append(f"  not counted in that range: the later seeds of {len(blind)} pair(s) of a kind with no record, "
                         f"e.g. {blind[0]}")
        if power is not None and power.best_other:
            undecided = sorted({k.split("/", 1)[0] for k in waiting} - {k.split("/", 1)[0] for k in runner.best_other})
            for dataset in undecided:
                low, high = _best_other_range(runner, dataset, first, records, sizes)
                lines.append(f"  the power seeds of the best other method of {dataset} (chosen once every first seed "
                             f"there has ended): +{low / 3600:.1f} h (the cheapest other method, one choice for every "
                             f"protocol) to +{high / 3600:.1f} h (the dearest, a different choice per protocol)")
    out = runner.out.resolve()
    own = records if out.parent == Path(records_root).resolve() else run_records(out.parent)
    spent = [r["seconds"] for r in own if r["grid"] == out.name]
    lines.append(f"CPU time of this grid's {len(spent)} finished run records: {sum(spent) / 3600:.1f} h")
    return lines
