"""False-hard-negative (FHN) probe: after an epoch, which negatives would the sampler train on now,
and how many of them are items the user actually likes?

A fixed, seeded probe of training pairs is drawn once. After every epoch the sampler is asked for its
negatives on the probe exactly as in training (same candidate draw, same code path) but without
gradient and with every random stream restored afterwards, so training is not changed. A synthetic
negative vector (CNSDiff, MixGCF, ADAR) is mapped to the real item nearest to it by cosine similarity
among the items that are not the user's training items.

Columns: fhn_heldout (share of negatives that are held-out positives of the same user: validation and
every test file), fhn_heldout_base (the same share for a uniformly random non-training item: the
chance level, computed exactly), fhn_true / fhn_true_base (the same against the ground-truth
preference matrix, when the dataset has one), neg_score / pos_score (mean user score of the negative
vectors and of the positives), neg_pop (mean training degree of the (nearest) negative items)."""
from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Optional

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F

from data.interaction import Interaction
from data.synthetic import load_truth
from module.samplers.base import NegativeSampler, TrainBatch
from util.draws import EpochSampler
from util.seed import preserved_random_state

log = logging.getLogger(__name__)


def truth_matrix(data: Interaction, folder: Path) -> Optional[sp.csr_matrix]:
    """The ground-truth preferences beside a synthetic dataset (truth.npz), in the run's internal ids."""
    path = Path(folder) / "truth.npz"
    if not path.is_file():
        return None
    liked = load_truth(folder)
    try:
        users = np.array([int(u) for u in data.user_ids])
        items = np.array([int(i) for i in data.item_ids])
    except ValueError:
        log.warning("%s: ids are not the generator's integer ids; fhn_true is not computed", path)
        return None
    if users.max() >= liked.shape[0] or items.max() >= liked.shape[1]:
        log.warning("%s does not match the training file's ids; fhn_true is not computed", path)
        return None
    return sp.csr_matrix(liked[np.ix_(users, items)])


def _keys(mat: sp.csr_matrix) -> np.ndarray:
    """Sorted user * n_items + item keys of a CSR matrix's entries."""
    coo = mat.tocoo()
    return np.sort(coo.row.astype(np.int64) * mat.shape[1] + coo.col.astype(np.int64))


def _member(keys: np.ndarray, users: np.ndarray, items: np.ndarray, n_items: int) -> np.ndarray:
    """Whether each (user, item) is among the sorted keys."""
    query = users.astype(np.int64) * n_items + items.astype(np.int64)
    where = np.searchsorted(keys, query)
    return (where < len(keys)) & (keys[np.minimum(where, len(keys) - 1)] == query)


class FHNProbe:
    """Measures the false-hard-negative rate of a sampler on a fixed probe of training pairs."""

    def __init__(self, data: Interaction, size: int, seed: int, batch_size: int,
                 truth: Optional[sp.csr_matrix] = None, cosine: bool = False):
        rng = np.random.default_rng([int(seed), 7461])  # its own generator: the run's streams are untouched
        n = len(data.train_users)
        index = np.sort(rng.choice(n, size=min(int(size), n), replace=False))
        self.users, self.pos = data.train_users[index], data.train_items[index]
        self.n_items, self.batch_size = data.n_items, batch_size
        self.cosine = cosine  # a loss that scores by cosine: neg_score and pos_score are cosines too
        self.train = data.train
        degree_u = np.diff(data.train.indptr)
        self.item_degree = data.item_degree()
        heldout = None
        for es in data.eval_sets.values():
            heldout = es.truth if heldout is None else heldout + es.truth
        heldout = heldout.tocsr().astype(np.float32)
        heldout.data[:] = 1
        heldout = heldout - heldout.multiply(data.train)  # held-out positives are never training items
        heldout.eliminate_zeros()
        self.heldout_keys = _keys(heldout)
        free = self.n_items - degree_u[self.users]
        self.heldout_base = float(np.mean(np.diff(heldout.indptr)[self.users] / free))
        self.truth_keys: Optional[np.ndarray] = None
        if truth is not None:
            truth = truth.astype(np.float32)
            truth = (truth - truth.multiply(data.train)).tocsr()
            truth.eliminate_zeros()
            self.truth_keys = _keys(truth)
            self.truth_base = float(np.mean(np.diff(truth.indptr)[self.users] / free))

    def __len__(self) -> int:
        return len(self.users)

    @torch.no_grad()
    def measure(self, model: torch.nn.Module, sampler: NegativeSampler, candidates: EpochSampler,
                epoch: int, max_epoch: int, device: torch.device) -> dict[str, float]:
        """The FHN columns for the model and sampler as they are now."""
        items_out, neg_scores, pos_scores = [], [], []
        with preserved_random_state(device):
            user_all, item_all, layers = model.propagate(sampler.needs_layers)
            cands_all = torch.from_numpy(candidates.draw(self.users, sampler.n_candidates)).to(device)
            users_all = torch.from_numpy(self.users).to(device)
            pos_all = torch.from_numpy(self.pos).to(device)
            for start in range(0, len(self.users), self.batch_size):
                sl = slice(start, start + self.batch_size)
                users, pos, cands = users_all[sl], pos_all[sl], cands_all[sl]
                batch = TrainBatch(users, pos, cands, epoch, max_epoch, user_all, item_all, layers)
                e_u, e_i = user_all[users], item_all[pos]
                out = sampler.negatives(batch, e_u, e_i)
                neg = out.embeddings()
                neg = neg if neg.dim() == 3 else neg.unsqueeze(1)  # (B, K, d)
                items = out.neg_items
                if items is None:
                    items = self.nearest(neg, users, item_all)
                items = items.reshape(len(users), -1)
                if out.extra_items is not None:  # real items a loss scores beside a synthesised negative (CNSDiff)
                    assert out.table is not None
                    items = torch.cat([items, out.extra_items], dim=1)
                    neg = torch.cat([neg, out.table[out.extra_items]], dim=1)
                items_out.append(items.cpu())
                if self.cosine:
                    e_u, e_i, neg = F.normalize(e_u, dim=-1), F.normalize(e_i, dim=-1), F.normalize(neg, dim=-1)
                neg_scores.append(torch.einsum("bd,bkd->bk", e_u, neg).mean(1).cpu())
                pos_scores.append((e_u * e_i).sum(-1).cpu())
        items = torch.cat(items_out).numpy()
        k = items.shape[1]
        users = np.repeat(self.users, k)
        flat = items.ravel()
        out = {"fhn_heldout": float(_member(self.heldout_keys, users, flat, self.n_items).mean()),
               "fhn_heldout_base": self.heldout_base}
        if self.truth_keys is not None:
            out["fhn_true"] = float(_member(self.truth_keys, users, flat, self.n_items).mean())
            out["fhn_true_base"] = self.truth_base
        out["neg_score"] = float(torch.cat(neg_scores).mean())
        out["pos_score"] = float(torch.cat(pos_scores).mean())
        out["neg_pop"] = float(self.item_degree[flat].mean())
        return out

    def nearest(self, vectors: torch.Tensor, users: torch.Tensor, item_all: torch.Tensor) -> torch.Tensor:
        """(B, K) the non-training item of each row's user nearest to each vector by cosine similarity."""
        rows, k, _ = vectors.shape
        sims = F.normalize(vectors.reshape(rows * k, -1), dim=-1) @ F.normalize(item_all, dim=-1).T
        sub = self.train[np.repeat(users.cpu().numpy(), k)].tocoo()
        sims[torch.from_numpy(sub.row).to(sims.device).long(), torch.from_numpy(sub.col).to(sims.device).long()] = -math.inf
        return sims.argmax(dim=1).reshape(rows, k)
