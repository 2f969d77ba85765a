"""A synthetic OOD benchmark with a known ground truth (generated, nothing fetched).

Users and items have latent factors; a user *likes* the items with the highest true affinity.
In the biased (training) process an item-popularity confounder drives exposure: each user is
shown items drawn with probability proportional to popularity, and observes the ones shown
*and* liked. train / valid_iid / test_iid split those observations per user (5 : 1 : 2 by default).
test_ood comes from a confounder-free process: items shown uniformly at random (among items the
user was not shown before), observed if liked. The full preference matrix is saved as truth.npz
so false-negative rates can be computed exactly.

    python -m data.synthetic --out dataset/synthetic --seed 0
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from data.loader import DataFileError
from util.io import atomic_write_json, atomic_write_text

log = logging.getLogger(__name__)

FILES = ("train.txt", "valid_iid.txt", "test_iid.txt", "test_ood.txt", "truth.npz", "meta.json")


@dataclass(frozen=True)
class SyntheticSpec:
    """Generator settings; the defaults make the embedded default dataset."""

    n_users: int = 3000
    n_items: int = 2000
    dim: int = 16  # latent dimension of true preferences
    like_rate: float = 0.1  # fraction of all items each user likes
    exposures_biased: int = 150  # items shown per user by the popularity-driven process
    exposures_ood: int = 60  # items shown per user uniformly at random (test_ood)
    pop_exponent: float = 1.0  # Zipf exponent of the popularity confounder
    split: tuple[int, int, int] = (5, 1, 2)  # train : valid_iid : test_iid of biased observations
    seed: int = 0


def generate(spec: SyntheticSpec) -> dict[str, np.ndarray]:
    """Draw the dataset; returns arrays of (user, item) rows per file plus the truth matrix."""
    rng = np.random.default_rng(spec.seed)
    users_f = rng.standard_normal((spec.n_users, spec.dim))
    items_f = rng.standard_normal((spec.n_items, spec.dim))
    affinity = users_f @ items_f.T
    n_liked = max(1, int(round(spec.like_rate * spec.n_items)))
    threshold = np.partition(affinity, spec.n_items - n_liked, axis=1)[:, spec.n_items - n_liked][:, None]
    liked = affinity >= threshold
    ranks = rng.permutation(spec.n_items)  # popularity rank of each item, independent of preference
    popularity = (1.0 + ranks) ** (-spec.pop_exponent)
    popularity /= popularity.sum()
    shown = _draw_without_replacement(rng, np.log(popularity), spec.n_users, spec.exposures_biased)
    observed = shown & liked
    train, valid, test_iid = _split_per_user(rng, observed, spec.split)
    uniform_logits = np.where(shown, -np.inf, 0.0)
    shown_ood = _draw_without_replacement(rng, uniform_logits, spec.n_users, spec.exposures_ood)
    test_ood = np.argwhere(shown_ood & liked)
    return {"train": train, "valid_iid": valid, "test_iid": test_iid, "test_ood": test_ood,
            "liked": liked, "popularity": popularity}


def _draw_without_replacement(rng: np.random.Generator, logits: np.ndarray, n_users: int, k: int) -> np.ndarray:
    """Per user, k items without replacement with probability proportional to exp(logits) (Gumbel top-k)."""
    keys = np.broadcast_to(logits, (n_users, logits.shape[-1])) + rng.gumbel(size=(n_users, logits.shape[-1]))
    top = np.argpartition(-keys, k - 1, axis=1)[:, :k]
    shown = np.zeros(keys.shape, dtype=bool)
    np.put_along_axis(shown, top, True, axis=1)
    return shown & np.isfinite(keys)


def _split_per_user(rng: np.random.Generator, observed: np.ndarray, split: tuple[int, int, int]):
    """Split each user's observed items into train/valid/test by the given ratios (train gets >= 1)."""
    rows = np.argwhere(observed)
    rows = rows[np.lexsort((rng.random(len(rows)), rows[:, 0]))]  # shuffle within user
    counts = np.bincount(rows[:, 0], minlength=observed.shape[0])
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    pos = np.arange(len(rows)) - starts[rows[:, 0]]
    n = counts[rows[:, 0]]
    total = sum(split)
    n_test = np.floor(n * split[2] / total).astype(int)
    n_valid = np.floor(n * split[1] / total).astype(int)
    n_train = n - n_test - n_valid
    part = np.where(pos < n_train, 0, np.where(pos < n_train + n_valid, 1, 2))
    return rows[part == 0], rows[part == 1], rows[part == 2]


def write(spec: SyntheticSpec, out: Path) -> dict[str, object]:
    """Generate and write the dataset files (triples `user item 1`) and truth.npz under out."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    parts = generate(spec)
    counts = {}
    for name in ("train", "valid_iid", "test_iid", "test_ood"):
        rows = parts[name]
        counts[name] = int(len(rows))
        atomic_write_text(out / f"{name}.txt", "".join(f"{u} {i} 1\n" for u, i in rows))
    tmp = out / ".truth.tmp.npz"
    np.savez_compressed(tmp, liked=np.packbits(parts["liked"], axis=1), shape=np.array(parts["liked"].shape),
                        popularity=parts["popularity"])
    tmp.replace(out / "truth.npz")
    meta = {"spec": dataclasses.asdict(spec), "rows": counts}
    atomic_write_json(out / "meta.json", meta)
    log.info("synthetic dataset written to %s: %s", out, counts)
    return meta


def load_truth(folder: Path) -> np.ndarray:
    """The boolean user x item preference matrix saved beside a synthetic dataset (raw ids = indices)."""
    with np.load(Path(folder) / "truth.npz") as z:
        shape = tuple(int(x) for x in z["shape"])
        return np.unpackbits(z["liked"], axis=1, count=shape[1]).astype(bool)


def ensure(folder: Path, spec: SyntheticSpec = SyntheticSpec(), setting: Optional[str] = None) -> None:
    """Generate the dataset under folder unless an identical one (same spec) is already there; a folder that
    cannot be written is a DataFileError naming it and `setting`, the option that chose it (e.g. dataset.root)."""
    folder = Path(folder)
    meta = folder / "meta.json"
    if all((folder / f).is_file() for f in FILES):
        try:
            same = json.loads(meta.read_text())["spec"] == json.loads(json.dumps(dataclasses.asdict(spec)))
        except (OSError, ValueError, KeyError):
            same = False
        if same:
            return
        log.warning("%s holds a synthetic dataset of other settings; regenerating", folder)
    log.info("generating the synthetic OOD dataset in %s (seed %d)", folder, spec.seed)
    try:
        write(spec, folder)
    except OSError as exc:
        where = (f"set {setting} to a writable folder (the dataset is generated in {setting}/synthetic on first "
                 f"use)" if setting else "choose a writable folder")
        raise DataFileError(f"{folder}: cannot write the synthetic dataset there ({_reason(exc)}); {where}") from None


def _reason(exc: OSError) -> str:
    """An OSError in a few words: its message and the path it concerns."""
    text = exc.strerror or str(exc)
    return f"{text}: {exc.filename}" if exc.filename else text


def main(argv: list[str] | None = None) -> int:
    """Command line: write a synthetic dataset; 2 (with one line) when the folder cannot be written."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("dataset/synthetic"))
    defaults = SyntheticSpec()
    for f in dataclasses.fields(SyntheticSpec):
        if f.name != "split":
            parser.add_argument(f"--{f.name.replace('_', '-')}", type=type(getattr(defaults, f.name)),
                                default=getattr(defaults, f.name))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    spec = SyntheticSpec(**{f.name: getattr(args, f.name) for f in dataclasses.fields(SyntheticSpec)
                            if f.name != "split"})
    try:
        write(spec, args.out)
    except OSError as exc:
        log.error("%s: cannot write the synthetic dataset there (%s); choose a writable --out folder", args.out,
                  _reason(exc))
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
