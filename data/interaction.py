"""Interaction: integer ids, the training CSR, the normalised graph, and the evaluation sets."""
from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from data.loader import DataFileError, RawInteractions

log = logging.getLogger(__name__)


@dataclass
class EvalSet:
    """One evaluation file: the users to rank, their held-out items and the items masked for them."""

    name: str
    role: str  # 'valid' or 'test'
    users: np.ndarray  # internal ids of users with at least one rankable item (sorted)
    truth: sp.csr_matrix  # n_users x n_items, held-out positives
    mask: sp.csr_matrix  # n_users x n_items, known positives excluded from the ranking
    dropped: dict[str, int]  # rows dropped, by reason

    @property
    def n_rows(self) -> int:
        """Number of rankable (user, item) rows."""
        return int(self.truth.nnz)


def _csr(users: np.ndarray, items: np.ndarray, shape: tuple[int, int]) -> sp.csr_matrix:
    mat = sp.csr_matrix((np.ones(len(users), dtype=np.float32), (users, items)), shape=shape)
    mat.sum_duplicates()
    mat.data[:] = 1.0
    mat.sort_indices()
    return mat


class Interaction:
    """Training interactions and evaluation files mapped to contiguous integer ids."""

    def __init__(self, train: RawInteractions, evals: dict[str, RawInteractions], eval_mask: str = "train_valid"):
        self.user_ids: list[str] = []
        self.item_ids: list[str] = []
        self.user_index: dict[str, int] = {}
        self.item_index: dict[str, int] = {}
        for u in train.users:
            if u not in self.user_index:
                self.user_index[u] = len(self.user_ids)
                self.user_ids.append(u)
        for i in train.items:
            if i not in self.item_index:
                self.item_index[i] = len(self.item_ids)
                self.item_ids.append(i)
        self.n_users, self.n_items = len(self.user_ids), len(self.item_ids)
        u = np.fromiter((self.user_index[x] for x in train.users), dtype=np.int64, count=len(train))
        i = np.fromiter((self.item_index[x] for x in train.items), dtype=np.int64, count=len(train))
        self.train = _csr(u, i, (self.n_users, self.n_items))
        self.train_duplicates = len(train) - self.train.nnz
        if self.train_duplicates:
            log.warning("%s: %d duplicate (user, item) row(s) in training, kept once", train.path,
                        self.train_duplicates)
        coo = self.train.tocoo()
        self.train_users = coo.row.astype(np.int64)
        self.train_items = coo.col.astype(np.int64)
        self.eval_sets: dict[str, EvalSet] = {}
        valid_csr = None
        for name, raw in evals.items():
            role = "valid" if name == "valid" else "test"
            if role == "valid":
                mask = self.train
            else:
                mask = self.train if (valid_csr is None or eval_mask == "train") else _binary_union(self.train, valid_csr)
            es = self._eval_set(name, role, raw, mask)
            if role == "valid":
                valid_csr = es.truth
            self.eval_sets[name] = es
        self._check_negatives_exist(train)

    def _check_negatives_exist(self, train: RawInteractions) -> None:
        """A DataFileError naming the users whose training rows cover every item: BPR pairs each positive with an
        item the user has not interacted with, and none exists for them (nor can they be evaluated)."""
        full = np.flatnonzero(np.diff(self.train.indptr) >= self.n_items)
        if len(full) == 0:
            return
        names = ", ".join(repr(self.user_ids[u]) for u in full[:5]) + (f" and {len(full) - 5} more" if len(full) > 5
                                                                      else "")
        raise DataFileError(f"{train.path}: user(s) {names} interacted with every one of the {self.n_items} "
                            f"training items, so no negative item exists for them (BPR needs one per training "
                            f"row, and nothing is left to rank for them); remove them from the data files")

    def _eval_set(self, name: str, role: str, raw: RawInteractions, mask: sp.csr_matrix) -> EvalSet:
        ui = np.fromiter((self.user_index.get(x, -1) for x in raw.users), dtype=np.int64, count=len(raw))
        ii = np.fromiter((self.item_index.get(x, -1) for x in raw.items), dtype=np.int64, count=len(raw))
        dropped = {"unseen_user": int(np.sum(ui < 0)), "unseen_item": int(np.sum((ui >= 0) & (ii < 0)))}
        keep = (ui >= 0) & (ii >= 0)
        ui, ii = ui[keep], ii[keep]
        known = np.asarray(mask[ui, ii]).ravel() > 0 if len(ui) else np.zeros(0, dtype=bool)
        dropped["already_known"] = int(known.sum())
        ui, ii = ui[~known], ii[~known]
        truth = _csr(ui, ii, (self.n_users, self.n_items))
        dropped["duplicate"] = int(len(ui) - truth.nnz)
        users = np.flatnonzero(np.diff(truth.indptr) > 0).astype(np.int64)
        total = sum(dropped.values())
        if total:
            log.warning("%s (%s): dropped %d of %d row(s): %s", raw.path, name, total, len(raw),
                        ", ".join(f"{k} {v}" for k, v in dropped.items() if v))
        if len(users) == 0:
            raise DataFileError(f"{raw.path} ({name}): no rankable user left (every row has an id unseen in "
                                f"training or is already a known positive); check the file and data.format")
        return EvalSet(name, role, users, truth, mask, dropped)

    def item_degree(self) -> np.ndarray:
        """Training popularity (number of training users) of every item."""
        return np.diff(self.train.tocsc().indptr)

    def normalized_adjacency(self) -> sp.csr_matrix:
        """D^-1/2 A D^-1/2 of the user-item bipartite graph (train edges, no self-loops), float32 CSR."""
        r = self.train
        adj = sp.bmat([[None, r], [r.T, None]], format="csr", dtype=np.float32)
        deg = np.asarray(adj.sum(axis=1)).ravel()
        inv_sqrt = np.zeros_like(deg)
        np.power(deg, -0.5, out=inv_sqrt, where=deg > 0)
        d = sp.diags(inv_sqrt)
        norm = (d @ adj @ d).tocsr().astype(np.float32)
        norm.sort_indices()
        return norm

    def summary(self) -> dict[str, object]:
        """Counts for the log and metrics.json."""
        out: dict[str, object] = {"users": self.n_users, "items": self.n_items, "train": int(self.train.nnz),
                                  "train_duplicates": int(self.train_duplicates)}
        for name, es in self.eval_sets.items():
            out[name] = {"users": int(len(es.users)), "rows": es.n_rows, "dropped": es.dropped}
        return out


def _binary_union(a: sp.csr_matrix, b: sp.csr_matrix) -> sp.csr_matrix:
    out = (a + b).tocsr()
    out.data[:] = 1.0
    out.sort_indices()
    return out
