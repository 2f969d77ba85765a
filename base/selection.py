"""Model-selection rules: which epoch's metrics are reported."""
from __future__ import annotations

from typing import Optional, Sequence

ALL4 = ("Recall@10", "NDCG@10", "Recall@20", "NDCG@20")


class ValidSelection:
    """Best epoch by one validation metric (strictly better wins), with early stopping. Early stopping
    can watch more files (`watch`, e.g. an OOD validation part): training stops only when none of the
    watched files has improved for `patience` epochs, so one run serves several selection protocols."""

    rule = "valid"

    def __init__(self, metric: str = "Recall@20", patience: int = 10, watch: Sequence[str] = ()):
        self.metric, self.patience, self.file = metric, patience, "valid"
        self.watch = [self.file] + [f for f in watch if f != self.file]
        self.best: Optional[float] = None
        self.best_epoch: Optional[int] = None
        self.watched_best: dict[str, float] = {}
        self.since_best = 0

    def update(self, epoch: int, metrics: dict[str, dict[str, float]]) -> bool:
        """Record an epoch's metrics; True if it becomes the selected epoch."""
        any_better = False
        for name in self.watch:
            value = metrics[name][self.metric]
            if name not in self.watched_best or value > self.watched_best[name]:
                self.watched_best[name] = value
                any_better = True
        self.since_best = 0 if any_better else self.since_best + 1
        value = metrics[self.file][self.metric]
        if self.best is None or value > self.best:
            self.best, self.best_epoch = value, epoch
            return True
        return False

    def should_stop(self) -> bool:
        """True once `patience` epochs passed without improvement (patience 0 never stops)."""
        return self.patience > 0 and self.since_best >= self.patience


class All4Selection:
    """The released code's rule: a new best only if Recall@10, NDCG@10, Recall@20, NDCG@20 of the
    test file are all >= the best so far (values rounded to 5 decimals, as SELFRec prints them).
    This selects on the test set; it is offered to reproduce the released numbers."""

    rule = "test_all4"
    metric = "+".join(ALL4)

    def __init__(self, test_file: str):
        self.file = test_file
        self.best: Optional[tuple[float, ...]] = None
        self.best_epoch: Optional[int] = None

    def update(self, epoch: int, metrics: dict[str, dict[str, float]]) -> bool:
        """Record an epoch's metrics; True if it becomes the selected epoch."""
        current = tuple(round(metrics[self.file][k], 5) for k in ALL4)
        if self.best is None or all(c >= b for c, b in zip(current, self.best)):
            self.best, self.best_epoch = current, epoch
            return True
        return False

    def should_stop(self) -> bool:
        """The released protocol runs every epoch."""
        return False


class ReferenceSelection:
    """The baselines' reference code (DENS, MixGCF, AHNS: `early_stopping` in their utils/helper.py): after
    each evaluation, a test Recall@20 at least as high as the best so far (>=, so a tie moves the choice to
    the later epoch) becomes the reported epoch; training stops after `patience` evaluations in a row
    without one. This selects on the test set; it is offered to compare with the authors' logs."""

    rule = "reference"

    def __init__(self, test_file: str, metric: str = "Recall@20", patience: int = 10):
        self.file, self.metric, self.patience = test_file, metric, patience
        self.best: Optional[float] = None
        self.best_epoch: Optional[int] = None
        self.since_best = 0

    def update(self, epoch: int, metrics: dict[str, dict[str, float]]) -> bool:
        """Record an evaluation; True if it becomes the reported epoch."""
        value = metrics[self.file][self.metric]
        if self.best is None or value >= self.best:
            self.best, self.best_epoch, self.since_best = value, epoch, 0
            return True
        self.since_best += 1
        return False

    def should_stop(self) -> bool:
        """True once `patience` evaluations passed without a new best (patience 0 never stops)."""
        return self.patience > 0 and self.since_best >= self.patience


def make_selection(rule: str, metric: str, patience: int, test_file: str,
                   watch: Sequence[str] = ()) -> "ValidSelection | All4Selection | ReferenceSelection":
    """Build the selection object for a resolved rule name."""
    if rule == "valid":
        return ValidSelection(metric, patience, watch)
    if rule == "test_all4":
        return All4Selection(test_file)
    if rule == "reference":
        return ReferenceSelection(test_file, metric, patience)
    raise ValueError(f"unknown selection rule {rule!r}")
