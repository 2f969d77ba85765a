"""How a grid protocol reads a run's epochs: where a run stopping on the protocol's own validation file alone
would have stopped, which epoch it reports, and how ties are broken (never by the order of the grid file).

A grid's `valid` and `ood_valid` protocols share their runs: a run keeps training until neither validation file
has improved for `early_stop.patience` evaluations (`early_stop.files`). Each protocol cuts the shared curve at
the epoch where a run watching its own file alone would have stopped (same patience, same minimum epochs, same
evaluation schedule) and selects among the epochs up to there. Training never reads a validation file, so the
cut curve is the curve of that run (tests/test_protocol.py checks it against real runs).

Ties: the reported epoch is the one with the best validation (Recall@20, NDCG@20), the earlier epoch on a tie
of both; a candidate is chosen by its reported epoch's validation Recall@20, then NDCG@20, Recall@10 and
NDCG@10 of the same file; a tie of all four (a `fallback` choice, counted in the tables) goes to the candidate
whose tag sorts first.
"""
from __future__ import annotations

from typing import Any, Optional, Sequence

EPOCH_KEYS = ("Recall@20", "NDCG@20")  # the reported epoch: the first, then the second; then the earlier epoch
CANDIDATE_KEYS = ("Recall@20", "NDCG@20", "Recall@10", "NDCG@10")  # the chosen candidate, in this order


def validation_file(protocol: str) -> str:
    """The validation file a protocol selects on: valid (IID) or ood_valid (a part of the OOD test rows)."""
    return "valid" if protocol == "valid" else "ood_valid"


def stop_index(rows: Sequence[dict[str, float]], file: str | Sequence[str], patience: int, min_epochs: int = 0,
               metric: str = "Recall@20") -> int:
    """The last row a run stopping on `file` (or on several watched files, as early_stop.files does) would have
    trained: after `patience` evaluations in a row in which no watched file's `metric` was strictly better than
    its best so far (patience 0: never), and not before `min_epochs` epochs; rows that were not evaluated (no
    value) neither count nor stop. The whole curve when it never stops."""
    columns = [f"{f}/{metric}" for f in ([file] if isinstance(file, str) else file)]
    best: dict[str, float] = {}
    since = 0
    for index, row in enumerate(rows):
        if columns[0] not in row:
            continue
        better = False
        for column in columns:
            if column in row and (column not in best or row[column] > best[column]):
                best[column], better = row[column], True
        since = 0 if better else since + 1
        if patience > 0 and since >= patience and index + 1 >= min_epochs:
            return index
    return len(rows) - 1


def reported_index(rows: Sequence[dict[str, float]], file: str, last: Optional[int] = None) -> Optional[int]:
    """The epoch a protocol reports among rows[: last + 1]: the best (Recall@20, NDCG@20) of `file`, the
    earlier epoch on a tie of both. None when no row has the file's values."""
    end = len(rows) if last is None else last + 1
    scored = [(tuple(rows[i].get(f"{file}/{k}", float("-inf")) for k in EPOCH_KEYS), -i) for i in range(end)
              if f"{file}/{EPOCH_KEYS[0]}" in rows[i]]
    return -max(scored)[1] if scored else None


def protocol_index(rows: Sequence[dict[str, float]], protocol: str, keys: dict[str, Any]) -> Optional[int]:
    """The row a protocol reports for a run with these config keys: the curve cut where a run watching the
    protocol's own validation file alone would have stopped, then reported_index."""
    if not rows:
        return None
    file = validation_file(protocol)
    last = stop_index(rows, file, int(keys.get("early_stop.patience", 10) or 0),
                      int(keys.get("early_stop.min_epochs", 0) or 0))
    return reported_index(rows, file, last)


def candidate_score(row: Optional[dict[str, float]], protocol: str) -> tuple[float, ...]:
    """What a candidate is chosen by: its reported row's validation CANDIDATE_KEYS (-inf where missing)."""
    file = validation_file(protocol)
    return tuple((row or {}).get(f"{file}/{k}", float("-inf")) for k in CANDIDATE_KEYS)


def choose(scored: Sequence[tuple[str, tuple[float, ...]]]) -> tuple[Optional[str], bool]:
    """(the tag of the best candidate, whether only the fallback decided it): the highest score, then the tag
    that sorts first among candidates tied on every key."""
    if not scored:
        return None, False
    top = max(score for _, score in scored)
    tied = sorted(tag for tag, score in scored if score == top)
    return tied[0], len(tied) > 1
