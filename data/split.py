"""Build an OOD split from a raw interaction log (CSV or whitespace: user, item, [rating], [timestamp]).

    python -m data.split temporal   --log ratings.csv --out dataset/ml-temporal --threshold 4
    python -m data.split popularity --log ratings.csv --out dataset/ml-popularity --threshold 4
    python -m data.split exposure   --log biased.csv --ood-log random.csv --out dataset/mine

Steps: read the log (rows with rating < --threshold dropped), keep each (user, item) pair once (its
earliest row), iterate k-core filtering (--min-user, --min-item), then pick test_ood by the shift:
  temporal   the latest --ood-frac of the rows by timestamp (all strictly after every other row);
  popularity a sample of --ood-frac of the rows drawn with weight popularity^-power, capped per item
             (and never more than half of an item's or a user's rows), so its item distribution is flat;
  exposure   the positives of a separately collected, uniformly exposed log (--ood-log).
The remaining rows are split per user into train : valid_iid : test_iid (--ratios, default 5:1:2),
seeded. Test rows whose user or item has no training row cannot be ranked: they are dropped and
counted in stats.json. Output: train.txt, valid_iid.txt, test_iid.txt, test_ood.txt as `user item 1`
triples (the log's own ids) and stats.json; the same log, settings and seed give identical bytes.
--out must be a new or empty folder: a split is never written over another one.
"""
from __future__ import annotations

import argparse
import dataclasses
import logging
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Union

import numpy as np

from data.loader import read_interactions
from data.rawlog import AUTO, ColumnRef, Log, LogFormat, SplitError, Vocab, read_log
from data.stats import format_table, split_stats
from util.io import atomic_write_json, atomic_write_text

log = logging.getLogger(__name__)

SHIFTS = ("temporal", "popularity", "exposure")
FILES = {"train": "train.txt", "valid_iid": "valid_iid.txt", "test_iid": "test_iid.txt", "test_ood": "test_ood.txt"}


@dataclass(frozen=True)
class SplitSpec:
    """Settings of one split build."""

    shift: str
    ood_frac: float = 0.2  # temporal / popularity: share of the filtered rows that go to test_ood
    ratios: tuple[float, float, float] = (5.0, 1.0, 2.0)  # train : valid_iid : test_iid per user
    min_user: int = 5
    min_item: int = 5
    threshold: Optional[float] = None  # keep rows with rating >= threshold (None: keep all)
    seed: int = 0
    item_cap: Optional[int] = None  # popularity: most test_ood rows per item (None: 2 x target / items)
    pop_power: float = 1.0  # popularity: sampling weight of a row = item popularity ** -pop_power

    def check(self) -> None:
        """Raise SplitError on settings that cannot work."""
        if self.shift not in SHIFTS:
            raise SplitError(f"unknown shift {self.shift!r}; valid: {', '.join(SHIFTS)}")
        if not 0.0 < self.ood_frac < 1.0:
            raise SplitError(f"ood_frac must be in (0, 1), got {self.ood_frac}")
        if len(self.ratios) != 3 or min(self.ratios) <= 0:
            raise SplitError(f"ratios must be three positive numbers train:valid:test, got {self.ratios}")
        if self.min_user < 1 or self.min_item < 1:
            raise SplitError("min_user and min_item must be >= 1")
        if self.item_cap is not None and self.item_cap < 1:
            raise SplitError("item_cap must be >= 1")
        if self.pop_power <= 0:
            raise SplitError("pop_power must be > 0")


@dataclass
class Split:
    """A built split: per file (user codes, item codes, timestamps or None) and what the build dropped."""

    parts: dict[str, tuple[np.ndarray, np.ndarray, Optional[np.ndarray]]]
    users: Vocab
    items: Vocab
    info: dict[str, object]


# ---- building -----------------------------------------------------------------------------------
def build(data: Log, spec: SplitSpec, ood_log: Optional[Log] = None) -> Split:
    """Filter the log and split it into train / valid_iid / test_iid / test_ood (no file I/O)."""
    spec.check()
    info: dict[str, object] = {"rows_read": data.rows_read, "rows_below_threshold": data.rows_below_threshold}
    keep = _first_of_pairs(data)
    info["duplicate_pairs_removed"] = int(len(data.users) - len(keep))
    u, i = data.users[keep], data.items[keep]
    t = data.times[keep] if data.times is not None else None
    ood = None
    if spec.shift == "exposure":
        if ood_log is None:
            raise SplitError("the exposure shift needs a separately collected, uniformly exposed log (--ood-log)")
        if ood_log.user_vocab is not data.user_vocab or ood_log.item_vocab is not data.item_vocab:
            raise SplitError("read the OOD log with the same Vocab objects as the log (ids must match)")
        first = _first_of_pairs(ood_log)
        ou, oi = ood_log.users[first], ood_log.items[first]
        ot = ood_log.times[first] if ood_log.times is not None else None
        base = int(max(i.max(), oi.max())) + 1
        overlap = np.isin(u * base + i, ou * base + oi)
        info["log_rows_also_in_ood_log"] = int(overlap.sum())
        u, i, t = u[~overlap], i[~overlap], (t[~overlap] if t is not None else None)
        ood = (ou, oi, ot)
    elif spec.shift == "temporal" and t is None:
        raise SplitError(f"{data.source}: the temporal shift needs a timestamp column, and none was found")
    core = _k_core(u, i, spec.min_user, spec.min_item)
    u, i, t = u[core], i[core], (t[core] if t is not None else None)
    info["rows_after_filtering"] = int(len(u))
    if len(u) == 0:
        raise SplitError(f"{data.source}: no rows left after filtering (rating >= {spec.threshold}, users with >= "
                         f"{spec.min_user} and items with >= {spec.min_item} rows); lower --min-user/--min-item "
                         f"or --threshold")
    rng = np.random.default_rng(spec.seed)
    is_ood = np.zeros(len(u), dtype=bool)
    if spec.shift == "temporal":
        is_ood, info["ood_cutoff_time"] = _temporal(t, spec.ood_frac, data.source)
    elif spec.shift == "popularity":
        is_ood = _popularity(u, i, spec, rng, info)
    if ood is None:
        ood = (u[is_ood], i[is_ood], t[is_ood] if t is not None else None)
    rest = np.flatnonzero(~is_ood)
    part = _per_user_parts(u[rest], spec.ratios, rng)
    parts = {}
    for k, name in enumerate(("train", "valid_iid", "test_iid")):
        idx = rest[part == k]
        parts[name] = (u[idx], i[idx], t[idx] if t is not None else None)
    parts["test_ood"] = ood
    _drop_unrankable(parts, info)
    for name, (pu, _, _) in parts.items():
        if len(pu) == 0:
            raise SplitError(f"{data.source}: {FILES[name]} would be empty ({info['rows_after_filtering']} rows "
                             f"after filtering, unrankable test rows dropped: {info['dropped_unrankable']}); use "
                             f"a larger log, lower --min-user/--min-item or change --ood-frac/--ratios")
    info["time_range"] = {name: [_num(p[2].min()), _num(p[2].max())] for name, p in parts.items()
                          if p[2] is not None}
    return Split(parts, data.user_vocab, data.item_vocab, info)


def _first_of_pairs(data: Log) -> np.ndarray:
    """Indices of the first row (earliest by timestamp, then by position) of each (user, item) pair."""
    base = int(data.items.max()) + 1
    key = data.users * base + data.items
    order = np.argsort(data.times, kind="stable") if data.times is not None else np.arange(len(key))
    _, first = np.unique(key[order], return_index=True)
    return np.sort(order[first])


def _k_core(u: np.ndarray, i: np.ndarray, min_user: int, min_item: int) -> np.ndarray:
    """Mask of rows left once every user has >= min_user rows and every item >= min_item rows."""
    keep = np.ones(len(u), dtype=bool)
    n_u, n_i = int(u.max(initial=-1)) + 1, int(i.max(initial=-1)) + 1
    while True:
        users = np.bincount(u[keep], minlength=n_u)
        items = np.bincount(i[keep], minlength=n_i)
        new = keep & (users[u] >= min_user) & (items[i] >= min_item)
        if new.sum() == keep.sum():
            return keep
        keep = new


def _temporal(t: np.ndarray, frac: float, source: str) -> tuple[np.ndarray, float]:
    """The latest `frac` of rows (ties at the cutoff all go to test_ood, so it is strictly later)."""
    k = max(1, int(math.ceil(frac * len(t))))
    cutoff = float(np.sort(t)[len(t) - k])
    is_ood = t >= cutoff
    if is_ood.all():
        raise SplitError(f"{source}: every row has the latest timestamp {cutoff}; no temporal split possible")
    return is_ood, _num(cutoff)


def _popularity(u: np.ndarray, i: np.ndarray, spec: SplitSpec, rng: np.random.Generator,
                info: dict[str, object]) -> np.ndarray:
    """Sample rows with weight pop^-power (without replacement), capped per item and per user."""
    target = int(round(spec.ood_frac * len(u)))
    pop, per_user = np.bincount(i), np.bincount(u)
    cap = spec.item_cap or max(1, int(math.ceil(2.0 * target / np.count_nonzero(pop))))
    item_cap = np.minimum(cap, pop // 2)  # an item keeps at least half its rows outside test_ood
    user_cap = per_user // 2  # and so does a user
    weight = pop[i].astype(np.float64) ** -spec.pop_power
    keys = np.log1p(-rng.random(len(u))) / weight  # Efraimidis-Spirakis: the largest keys win
    order = np.argsort(-keys, kind="stable")
    order = order[_rank_within(i[order]) < item_cap[i[order]]]
    order = order[_rank_within(u[order]) < user_cap[u[order]]]
    chosen = order[:target]
    info.update({"ood_target_rows": target, "ood_item_cap": cap, "ood_sampled_rows": int(len(chosen))})
    if len(chosen) < target:
        log.warning("popularity shift: only %d of %d target test_ood rows within the caps", len(chosen), target)
    is_ood = np.zeros(len(u), dtype=bool)
    is_ood[chosen] = True
    return is_ood


def _rank_within(groups: np.ndarray) -> np.ndarray:
    """For each element, how many earlier elements share its group."""
    order = np.argsort(groups, kind="stable")
    ordered = groups[order]
    starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])
    sizes = np.diff(np.r_[starts, len(groups)])
    rank = np.empty(len(groups), dtype=np.int64)
    rank[order] = np.arange(len(groups)) - np.repeat(starts, sizes)
    return rank


def _shuffled_within_users(users: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(order, rank): the rows sorted by user, in a seeded random order within each user, and each ordered row's rank
    among its user's rows (0 first)."""
    order = np.lexsort((rng.random(len(users)), users))
    return order, _rank_within(users[order])


def _per_user_parts(users: np.ndarray, ratios: tuple[float, float, float], rng: np.random.Generator) -> np.ndarray:
    """0/1/2 (train/valid/test) per row: a seeded shuffle within each user, cut by ratios (train >= 1 row)."""
    n = len(users)
    counts = np.bincount(users, minlength=int(users.max(initial=-1)) + 1)
    total = float(sum(ratios))
    # stochastic rounding keeps the expected share exact also for users with few rows
    n_test = np.floor(counts * ratios[2] / total + rng.random(len(counts))).astype(np.int64)
    n_valid = np.floor(counts * ratios[1] / total + rng.random(len(counts))).astype(np.int64)
    n_test = np.minimum(n_test, np.maximum(counts - 1, 0))
    n_valid = np.minimum(n_valid, np.maximum(counts - 1 - n_test, 0))
    n_train = counts - n_test - n_valid
    order, pos = _shuffled_within_users(users, rng)
    owner = users[order]
    values = np.where(pos < n_train[owner], 0, np.where(pos < n_train[owner] + n_valid[owner], 1, 2))
    part = np.empty(n, dtype=np.int64)
    part[order] = values
    return part


def _drop_unrankable(parts: dict, info: dict[str, object]) -> None:
    """Drop test rows whose user or item has no training row; count them in info."""
    tu, ti, _ = parts["train"]
    size = int(max(p[0].max(initial=-1) for p in parts.values())) + 1
    isize = int(max(p[1].max(initial=-1) for p in parts.values())) + 1
    has_user = np.zeros(size, dtype=bool)
    has_item = np.zeros(isize, dtype=bool)
    has_user[tu], has_item[ti] = True, True
    dropped = {}
    for name in ("valid_iid", "test_iid", "test_ood"):
        pu, pi, pt = parts[name]
        ok = has_user[pu] & has_item[pi]
        dropped[name] = int(np.sum(~ok))
        parts[name] = (pu[ok], pi[ok], pt[ok] if pt is not None else None)
    info["dropped_unrankable"] = dropped


def _num(value: float) -> Union[int, float]:
    value = float(value)
    return int(value) if value.is_integer() else value


# ---- writing ------------------------------------------------------------------------------------
def write_split(split: Split, out: Path) -> dict[str, object]:
    """Write the four files as `user item 1` triples (sorted) and stats.json; return the statistics."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for name, (pu, pi, _) in split.parts.items():
        order = np.lexsort((pi, pu))
        unames, inames = split.users.names, split.items.names
        atomic_write_text(out / FILES[name], "".join(f"{unames[a]} {inames[b]} 1\n"
                                                     for a, b in zip(pu[order].tolist(), pi[order].tolist())))
    stats = split_stats({name: (p[0], p[1]) for name, p in split.parts.items()})
    stats["build"] = split.info
    atomic_write_json(out / "stats.json", stats)
    return stats


def build_split(log_path: Path, out: Path, spec: SplitSpec, fmt: LogFormat = LogFormat(),
                ood_log_path: Optional[Path] = None) -> dict[str, object]:
    """Read the log(s), build the split and write it under out; returns the statistics written."""
    spec.check()
    if spec.shift == "exposure" and ood_log_path is None:
        raise SplitError("the exposure shift needs a separately collected, uniformly exposed log (--ood-log)")
    if spec.shift != "exposure" and ood_log_path is not None:
        raise SplitError(f"--ood-log is only used by the exposure shift, not {spec.shift}")
    users, items = Vocab(), Vocab()
    data = read_log(log_path, fmt, spec.threshold, users, items)
    ood = read_log(ood_log_path, fmt, spec.threshold, users, items) if ood_log_path is not None else None
    split = build(data, spec, ood)
    split.info = {"spec": dataclasses.asdict(spec), "log": data.source,
                  "ood_log": ood.source if ood is not None else None, **split.info}
    stats = write_split(split, out)
    log.info("%s shift split written to %s", spec.shift, out)
    return stats


def check_new_folder(out: Path) -> None:
    """A SplitError when out is a file, or a folder that already holds anything: a split is never written over
    another one (files of the old split that the new one does not write would stay beside it)."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise SplitError(f"--out {out} is a file, not a folder; choose a new --out folder")
    if out.is_dir():
        entries = sorted(p.name for p in out.iterdir())
        if entries:
            shown = ", ".join(entries[:4]) + (", ..." if len(entries) > 4 else "")
            raise SplitError(f"--out {out} already holds {len(entries)} file(s) ({shown}); a split is never written "
                             f"over another: choose a new --out folder, or remove this one first")


# ---- the ood_valid split of a dataset's test_ood (the grids' ood_valid protocol) ----------------------------------
OOD_VALID_SEED = 20250101  # one split per test_ood file and fraction, whichever grid builds it
OOD_VALID_FILES = {"ood_valid": "ood_valid.txt", "test_ood": "test_ood_rest.txt"}


def split_ood_valid(users: np.ndarray, fraction: float, seed: int = OOD_VALID_SEED) -> tuple[np.ndarray, np.ndarray]:
    """(order, is_valid): the rows sorted by user, in a seeded random order within each user, and whether each ordered
    row goes to ood_valid: its user's first floor(fraction x the user's rows), so a user with few rows gives none."""
    order, rank = _shuffled_within_users(users, np.random.default_rng(seed))
    _, owner, counts = np.unique(users[order], return_inverse=True, return_counts=True)
    return order, rank < np.floor(counts[owner] * fraction).astype(int)


def write_ood_valid_split(source: Path, fmt: str, fraction: float, folder: Path) -> dict[str, int]:
    """Split a test_ood file (data format `fmt`) per user (split_ood_valid) into folder/ood_valid.txt and
    folder/test_ood_rest.txt, in the same format; returns the rows of each (keyed as OOD_VALID_FILES)."""
    raw = read_interactions(source, fmt)
    users, items = np.array(raw.users), np.array(raw.items)
    order, is_valid = split_ood_valid(users, fraction)
    users, items = users[order], items[order]
    rows = {}
    for name, mask in (("ood_valid", is_valid), ("test_ood", ~is_valid)):
        atomic_write_text(Path(folder) / OOD_VALID_FILES[name], _format_rows(users[mask], items[mask], fmt))
        rows[name] = int(mask.sum())
    return rows


def _format_rows(users: np.ndarray, items: np.ndarray, fmt: str) -> str:
    """Rows (sorted by user) in a dataset format: `u i 1` lines, or one `u i1 i2 ...` line per user."""
    if fmt != "adjacency":
        return "".join(f"{u} {i} 1\n" for u, i in zip(users, items))
    lines, start = [], 0
    for end in range(1, len(users) + 1):
        if end == len(users) or users[end] != users[start]:
            lines.append(f"{users[start]} {' '.join(items[start:end])}\n")
            start = end
    return "".join(lines)


# ---- command line -------------------------------------------------------------------------------
def _column(text: str) -> ColumnRef:
    return None if text.lower() == "none" else int(text) if text.isdigit() else text


def _ratios(text: str) -> tuple[float, float, float]:
    parts = [p for p in text.replace(":", ",").split(",") if p.strip()]
    try:
        values = tuple(float(p) for p in parts)
    except ValueError:
        raise argparse.ArgumentTypeError(f"ratios must be numbers like 5,1,2, got {text!r}") from None
    if len(values) != 3:
        raise argparse.ArgumentTypeError(f"ratios need three numbers train,valid,test, got {text!r}")
    return values  # type: ignore[return-value]


def main(argv: Optional[list[str]] = None) -> int:
    """Command line: build one split and print its statistics table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    d = SplitSpec("temporal")
    parser.add_argument("shift", choices=SHIFTS)
    parser.add_argument("--log", type=Path, required=True, help="the raw log (the biased log for exposure)")
    parser.add_argument("--ood-log", type=Path, default=None, help="exposure: the uniformly exposed log")
    parser.add_argument("--out", type=Path, required=True, help="output folder (e.g. dataset/NAME)")
    parser.add_argument("--threshold", type=float, default=d.threshold, help="keep rows with rating >= this")
    parser.add_argument("--min-user", type=int, default=d.min_user)
    parser.add_argument("--min-item", type=int, default=d.min_item)
    parser.add_argument("--ood-frac", type=float, default=d.ood_frac)
    parser.add_argument("--ratios", type=_ratios, default=d.ratios, help="train,valid,test (default 5,1,2)")
    parser.add_argument("--seed", type=int, default=d.seed)
    parser.add_argument("--item-cap", type=int, default=d.item_cap)
    parser.add_argument("--pop-power", type=float, default=d.pop_power)
    parser.add_argument("--sep", default=None, help="field separator (default: detect ',', tab or whitespace)")
    parser.add_argument("--header", action=argparse.BooleanOptionalAction, default=None)
    for role in ("user", "item", "rating", "time"):
        parser.add_argument(f"--{role}-col", type=_column, default=AUTO, help="header name, 0-based index or none")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    spec = SplitSpec(args.shift, args.ood_frac, args.ratios, args.min_user, args.min_item, args.threshold,
                     args.seed, args.item_cap, args.pop_power)
    fmt = LogFormat(args.sep, args.header, args.user_col, args.item_col, args.rating_col, args.time_col)
    try:
        check_new_folder(args.out)
        stats = build_split(args.log, args.out, spec, fmt, args.ood_log)
    except SplitError as exc:
        log.error("%s", exc)
        return 2
    except OSError as exc:  # e.g. an --out folder that cannot be written, a log that cannot be read
        log.error("%s: %s", exc.filename or args.out, exc.strerror or exc)
        return 2
    print(f"{args.out}: {args.shift} shift from {args.log.name}")
    print(format_table(stats))
    return 0


if __name__ == "__main__":
    sys.exit(main())
