"""Rebuild the KuaiRec split from the raw KuaiRec release (the paper's training file is not published).

KuaiRec (Gao et al., CIKM 2022, CC BY-SA 4.0) ships big_matrix.csv (7,176 users x 10,728 videos: what
the platform's recommender showed) and small_matrix.csv (1,411 x 3,327, almost fully observed: every
video shown to every user), with columns user_id, video_id, ..., watch_ratio. As in the paper, a play
with watch_ratio >= 2 is a positive. The big matrix gives train / valid_iid / test_iid (per user
5 : 1 : 2, seeded) and the fully exposed small matrix gives test_ood: an exposure shift, built by the
exposure builder of data/split.py (same de-duplication and k-core filtering as any other log).

    python -m data.download kuairec --raw "KuaiRec 2.0/data"
"""
from __future__ import annotations

import logging
from pathlib import Path

from data.rawlog import LogFormat, SplitError
from data.split import SplitSpec, build_split

log = logging.getLogger(__name__)

BIG, SMALL = "big_matrix.csv", "small_matrix.csv"
FORMAT = LogFormat(sep=",", header=True, user="user_id", item="video_id", rating="watch_ratio", time=None)
POSITIVE_WATCH_RATIO = 2.0
NOT_PUBLISHED = ("kuairec: the paper's training split is not published as a file. The two published test files "
                 "are now under dataset/kuairec/drgo/ for reference (their id mapping is not published, so they "
                 "cannot be joined with a rebuilt train). Build the runnable split from the raw KuaiRec release "
                 "(big_matrix.csv, small_matrix.csv): python -m data.download kuairec --raw DIR_WITH_KUAIREC_CSVS")


def find_csv(raw: Path, name: str) -> Path:
    """The path of a KuaiRec CSV under raw (directly, in data/, or in one sub-folder's data/)."""
    raw = Path(raw)
    for path in [raw / name, raw / "data" / name, *sorted(raw.glob(f"*/data/{name}")), *sorted(raw.glob(f"*/{name}"))]:
        if path.is_file():
            return path
    raise SplitError(f"{name} not found under {raw} (expected the raw KuaiRec release: {BIG} and {SMALL}, "
                     f"e.g. in 'KuaiRec 2.0/data/')")


def build(raw: Path, out: Path, seed: int = 0, threshold: float = POSITIVE_WATCH_RATIO,
          min_user: int = 5, min_item: int = 5) -> dict[str, object]:
    """Write the KuaiRec split (train, valid_iid, test_iid, test_ood, stats.json) under out."""
    big, small = find_csv(raw, BIG), find_csv(raw, SMALL)
    log.info("building KuaiRec from %s and %s (watch_ratio >= %g is positive); this reads ~17M rows",
             big, small, threshold)
    spec = SplitSpec("exposure", threshold=threshold, seed=seed, min_user=min_user, min_item=min_item)
    return build_split(big, out, spec, FORMAT, ood_log_path=small)
