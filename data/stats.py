"""Split statistics: sizes, the item-popularity profile of each file, and overlap checks.

    python -m data.stats dataset/food              # a preset folder: its format and files
    python -m data.stats my_split --format triples  # any folder of split files
    python -m data.stats my_split --json my_split/stats_check.json

The popularity columns show whether a shift exists before any training: `pop_train` is the mean
training popularity of the items a file's rows point at (train itself: the popularity-weighted mean),
`head20` the share of the file's rows on the 20% most popular training items and `gini` the Gini
coefficient of the file's own item counts. A flattened OOD test has a much lower pop_train and head20
than train.
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from data.loader import FORMATS, DataFileError, read_interactions
from data.presets import PRESETS
from util.io import atomic_write_json

log = logging.getLogger(__name__)

# File names looked for in a folder that is not a preset, in display order.
STANDARD_FILES = ("train.txt", "valid_iid.txt", "valid.txt", "test_iid.txt", "test_id.txt", "test_ood.txt",
                  "test.txt")
HEAD_SHARE = 0.2  # the "head": this fraction of training items, most popular first


def gini(counts: np.ndarray) -> float:
    """Gini coefficient of non-negative counts (0 = all equal, towards 1 = concentrated on few)."""
    x = np.sort(np.asarray(counts, dtype=np.float64))
    n, total = len(x), float(x.sum())
    if n == 0 or total == 0.0:
        return 0.0
    ranks = np.arange(1, n + 1, dtype=np.float64)
    return float(2.0 * np.sum(ranks * x) / (n * total) - (n + 1.0) / n)


def split_stats(files: dict[str, tuple[Sequence, Sequence]], train: str = "train") -> dict[str, object]:
    """Statistics of named files of (users, items) rows; `train` names the training file."""
    if train not in files:
        raise ValueError(f"split_stats: no training file named {train!r} among {list(files)}")
    names = list(files)
    user_codes, n_users, item_codes, n_items = _joint_codes(files)
    train_items = item_codes[train]
    train_pop = np.bincount(train_items, minlength=n_items)
    head = _head_items(train_pop)
    train_users = np.zeros(n_users, dtype=bool)
    train_users[user_codes[train]] = True
    pairs = {name: np.unique(user_codes[name] * n_items + item_codes[name]) for name in names}
    out: dict[str, object] = {"files": {}, "overlaps": {}}
    for name in names:
        u, i = user_codes[name], item_codes[name]
        own = np.bincount(i, minlength=n_items)
        own = own[own > 0]
        seen = train_users[u] & (train_pop[i] > 0)
        pops = train_pop[i[seen]].astype(np.float64)
        out["files"][name] = {
            "rows": int(len(u)),
            "duplicates": int(len(u) - len(pairs[name])),
            "users": int(len(np.unique(u))),
            "items": int(len(own)),
            "item_pop_mean": round(float(own.mean()), 4) if len(own) else 0.0,
            "item_pop_gini": round(gini(own), 4),
            "train_pop_mean": round(float(pops.mean()), 4) if len(pops) else 0.0,
            "train_pop_median": float(np.median(pops)) if len(pops) else 0.0,
            "head20_share": round(float(head[i[seen]].mean()), 4) if len(pops) else 0.0,
            "unseen_users": int(len(np.unique(u[~train_users[u]]))),
            "unseen_items": int(len(np.unique(i[train_pop[i] == 0]))),
            "rows_unrankable": int(np.sum(~seen)),
        }
    for a_pos, a in enumerate(names):
        for b in names[a_pos + 1:]:
            out["overlaps"][f"{a}&{b}"] = int(len(np.intersect1d(pairs[a], pairs[b], assume_unique=True)))
    return out


def _joint_codes(files: dict[str, tuple[Sequence, Sequence]]):
    """Map the users and items of all files to shared integer codes."""
    def encode(column: int):
        arrays = [np.asarray(pair[column]) for pair in files.values()]
        if all(a.dtype.kind in "iu" for a in arrays):
            joint = np.concatenate(arrays).astype(np.int64)
        else:
            joint = np.concatenate([a.astype(str) for a in arrays])
        uniq, inverse = np.unique(joint, return_inverse=True)
        bounds = np.cumsum([0] + [len(a) for a in arrays])
        return {name: inverse[bounds[k]:bounds[k + 1]].astype(np.int64) for k, name in enumerate(files)}, len(uniq)

    users, n_users = encode(0)
    items, n_items = encode(1)
    return users, n_users, items, n_items


def _head_items(train_pop: np.ndarray) -> np.ndarray:
    """Boolean mask of the top HEAD_SHARE of training items by popularity (ties by code)."""
    in_train = np.flatnonzero(train_pop > 0)
    k = int(np.ceil(HEAD_SHARE * len(in_train)))
    order = in_train[np.lexsort((in_train, -train_pop[in_train]))]
    head = np.zeros(len(train_pop), dtype=bool)
    head[order[:k]] = True
    return head


COLUMNS = (("rows", "rows", "d"), ("users", "users", "d"), ("items", "items", "d"),
           ("item_pop_gini", "gini", ".3f"), ("train_pop_mean", "pop_train", ".1f"),
           ("head20_share", "head20", ".3f"), ("unseen_users", "new_u", "d"), ("unseen_items", "new_i", "d"),
           ("duplicates", "dup", "d"))


def format_table(stats: dict[str, object]) -> str:
    """A fixed-width text table of split_stats output, plus the non-zero overlaps."""
    files = stats["files"]
    header = ["file"] + [title for _, title, _ in COLUMNS]
    rows = [[name] + [format(info[key], fmt) for key, _, fmt in COLUMNS] for name, info in files.items()]
    widths = [max(len(r[c]) for r in [header] + rows) for c in range(len(header))]
    lines = ["  ".join(cell.ljust(w) if c == 0 else cell.rjust(w) for c, (cell, w) in enumerate(zip(r, widths)))
             for r in [header] + rows]
    shared = [f"{k} {v}" for k, v in stats["overlaps"].items() if v]
    lines.append("shared (user, item) pairs: " + (", ".join(shared) if shared else "none"))
    return "\n".join(lines)


def folder_files(folder: Path, fmt: Optional[str] = None) -> tuple[dict[str, Path], str]:
    """The split files of a folder (by preset if its name is one) and the format to read them with."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataFileError(f"not a folder: {folder}")
    preset = PRESETS.get(folder.name.lower())
    names = preset.files() if preset else list(STANDARD_FILES)
    files = {Path(n).stem: folder / n for n in names if (folder / n).is_file()}
    train = Path(preset.train).stem if preset else "train"
    if train not in files:
        raise DataFileError(f"{folder}: no {train}.txt; a split folder needs its training file")
    return files, fmt or (preset.format if preset else "triples")


def folder_stats(folder: Path, fmt: Optional[str] = None) -> dict[str, object]:
    """split_stats of a folder's files, read with data.loader (malformed lines counted the same way)."""
    files, fmt = folder_files(folder, fmt)
    raw = {name: read_interactions(path, fmt) for name, path in files.items()}
    stats = split_stats({name: (r.users, r.items) for name, r in raw.items()})
    stats["format"] = fmt
    for name, r in raw.items():
        stats["files"][name]["malformed_lines"] = r.malformed
    return stats


def main(argv: Optional[list[str]] = None) -> int:
    """Command line: print the statistics table of a split folder."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--format", choices=FORMATS, default=None,
                        help="file format (default: the preset's if the folder is named after one, else triples)")
    parser.add_argument("--json", type=Path, default=None, help="also write the statistics to this JSON file")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    try:
        stats = folder_stats(args.folder, args.format)
    except (DataFileError, FileNotFoundError) as exc:
        log.error("%s", exc)
        return 2
    if args.json:
        atomic_write_json(args.json, stats)
    print(f"{args.folder} ({stats['format']})")
    print(format_table(stats))
    return 0


if __name__ == "__main__":
    sys.exit(main())
