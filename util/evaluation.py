"""Full-ranking evaluation on the device: batched scores, masked known positives, torch top-k,
vectorised Recall, NDCG, Precision and Hit Ratio with SELFRec's definitions:

- Recall@K    = mean over users of |topK & T_u| / |T_u|
- Precision@K = sum of hits / (number of users * K)
- Hit Ratio@K = sum of hits / sum of |T_u|   (SELFRec's micro-averaged hit ratio)
- NDCG@K      = mean over users of DCG / IDCG, binary gains, IDCG over min(|T_u|, K) items
- ARP@K       = mean over users of the mean training popularity (degree) of their top-K items
                (average recommendation popularity; only when item popularity is given)
With pop_penalty gamma > 0 items are ranked by score - gamma * log(1 + training degree).
"""
from __future__ import annotations

from typing import Callable, Mapping, Optional

import numpy as np
import scipy.sparse as sp
import torch

class _RowSlicer:
    """A CSR matrix restricted to given rows, ready to slice row ranges on the device without host syncs."""

    def __init__(self, mat: sp.csr_matrix, rows: np.ndarray, device: torch.device):
        sub = mat[rows]
        self.indptr = sub.indptr.astype(np.int64)  # stays on the host: slicing bounds are python ints
        counts = np.diff(self.indptr)
        self.rows = torch.from_numpy(np.repeat(np.arange(len(rows), dtype=np.int64), counts)).to(device)
        self.cols = torch.from_numpy(sub.indices.astype(np.int64)).to(device)
        self.counts = torch.from_numpy(counts).to(device)

    def block(self, start: int, end: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(local row, column) pairs of rows start..end-1, rows relative to start."""
        a, b = int(self.indptr[start]), int(self.indptr[end])
        return self.rows[a:b] - start, self.cols[a:b]


def _holds(buffer: torch.Tensor, rows: int, n_items: int, like: torch.Tensor) -> bool:
    """Whether `buffer` holds `rows` x n_items scores of like's dtype on like's device."""
    return (buffer.shape[0] >= rows and buffer.shape[1] == n_items and buffer.dtype == like.dtype
            and buffer.device == like.device)


class EvalBuffers:
    """A score buffer and a cleared truth mask of `rows` x n_items, reused by every batch of an evaluation (and by
    every file of a run's: SharedRanking.buffers): a fresh batch x n_items tensor per batch is fresh memory, whose
    page faults on a CPU cost about a quarter of the batches' time (docs/speed.md, Evaluation); the numbers are the same
    (tests/test_evaluation.py)."""

    def __init__(self, rows: int, n_items: int, dtype: torch.dtype, device: torch.device):
        self.scores = torch.empty(rows, n_items, dtype=dtype, device=device)
        self.truth = torch.zeros(rows, n_items, dtype=torch.bool, device=device)  # all False between batches

    def fits(self, rows: int, n_items: int, like: torch.Tensor) -> bool:
        """Whether batches of `rows` rows over n_items items of like's dtype and device fit."""
        return _holds(self.scores, rows, n_items, like)


class RankingEvaluator:
    """Evaluates one evaluation file (its users, held-out items and masked items) for any embeddings."""

    def __init__(self, users: np.ndarray, truth: sp.csr_matrix, mask: sp.csr_matrix, top_n: list[int],
                 device: torch.device, batch_users: int = 2048, item_popularity: np.ndarray | None = None,
                 pop_penalty: float = 0.0, average_over: int | None = None):
        self.top_n = sorted(set(int(k) for k in top_n))
        self.max_k = max(self.top_n)
        self.device = device
        self.batch_users = int(batch_users)
        self.users_np = users
        # Precision, Recall and NDCG are means over this many users (None: the eval users; more: every user of the
        # data, one without items in this file counting 0, as IR-Benchmark averages)
        self.average_over = average_over
        self.users = torch.from_numpy(users).to(device)
        self.n_items = truth.shape[1]
        self.truth = _RowSlicer(truth, users, device)
        self.mask_matrix = mask  # every user's masked items (SharedRanking slices other users' rows of it)
        self.mask = _RowSlicer(mask, users, device)
        self.n_truth = self.truth.counts.to(torch.float64)
        discounts = 1.0 / torch.log2(torch.arange(2, self.max_k + 2, dtype=torch.float64, device=device))
        self.discounts = discounts
        self.idcg = torch.cumsum(discounts, 0)  # idcg[n-1] = ideal DCG of n relevant items
        self.popularity = (torch.from_numpy(np.asarray(item_popularity, dtype=np.float64)).to(device)
                           if item_popularity is not None else None)
        self.penalty = None  # gamma * log(1 + degree), subtracted from every score when ranking
        if pop_penalty > 0:
            if self.popularity is None:
                raise ValueError("pop_penalty needs item_popularity")
            self.penalty = (pop_penalty * torch.log1p(self.popularity)).float()

    @property
    def batch_rows(self) -> int:
        """The rows of this file's largest batch."""
        return min(self.batch_users, len(self.users_np))

    @torch.no_grad()
    def topk(self, user_emb: torch.Tensor, item_emb: Optional[torch.Tensor], k: int | None = None,
             start: int = 0, end: int | None = None,
             out: Optional[torch.Tensor] = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Top-k (scores, items) of eval users start..end-1 with their masked items excluded. With item_emb
        None, user_emb is the whole (n_users, n_items) score matrix (a closed-form model's). `out`: a buffer of
        at least end - start rows for the scores (overwritten), else they go to fresh memory."""
        k = k or self.max_k
        end = len(self.users_np) if end is None else end
        index = self.users[start:end]
        if out is None:
            rows = user_emb[index]
            scores = rows @ item_emb.T if item_emb is not None else rows.clone()
        else:
            if not _holds(out, end - start, self.n_items, user_emb):
                raise ValueError(f"the score buffer ({tuple(out.shape)}, {out.dtype}, {out.device}) does not hold "
                                 f"{end - start} x {self.n_items} scores of {user_emb.dtype} on {user_emb.device}")
            scores = out[: end - start]
            if item_emb is not None:
                torch.mm(user_emb[index], item_emb.T, out=scores)
            else:
                torch.index_select(user_emb, 0, index, out=scores)
        if self.penalty is not None:
            scores -= self.penalty.to(scores.dtype)
        rows, cols = self.mask.block(start, end)
        scores[rows, cols] = -torch.inf
        return torch.topk(scores, min(k, self.n_items), dim=1)

    def ranks_like(self, other: "RankingEvaluator") -> bool:
        """Whether other ranks items as this evaluator does up to its mask (items, depth, penalty, batch, device)."""
        same_penalty = (self.penalty is None and other.penalty is None) or (
            self.penalty is not None and other.penalty is not None and torch.equal(self.penalty, other.penalty))
        return (self.n_items == other.n_items and self.max_k == other.max_k and same_penalty
                and self.batch_users == other.batch_users and self.device == other.device)

    @torch.no_grad()
    def evaluate(self, user_emb: torch.Tensor, item_emb: Optional[torch.Tensor],
                 buffers: Optional[EvalBuffers] = None) -> dict[str, float]:
        """Metrics '<name>@K' for every K in top_n over all eval users (item_emb None: see topk); `buffers` are
        used when they fit (several files evaluated one after another share one), else made for this call."""
        if buffers is None or not buffers.fits(self.batch_rows, self.n_items, user_emb):
            buffers = EvalBuffers(self.batch_rows, self.n_items, user_emb.dtype, self.device)
        return self.metrics(lambda start, end: self.topk(user_emb, item_emb, self.max_k, start, end,
                                                         buffers.scores)[1], buffers)

    @torch.no_grad()
    def metrics(self, ranked: Callable[[int, int], torch.Tensor], buffers: EvalBuffers) -> dict[str, float]:
        """The metrics of the top-k items that ranked(start, end) gives for eval users start..end-1, summed batch by
        batch (batches of batch_users rows, whoever ranked them); buffers.truth holds a batch's rows."""
        sums = torch.zeros(len(self.top_n), 4, dtype=torch.float64, device=self.device)
        n_users = len(self.users_np)
        for start in range(0, n_users, self.batch_users):
            end = min(start + self.batch_users, n_users)
            items = ranked(start, end)
            truth = buffers.truth[: end - start]
            rows, cols = self.truth.block(start, end)
            truth[rows, cols] = True
            hits = truth.gather(1, items).to(torch.float64)
            truth[rows, cols] = False  # cleared for the next batch
            n_truth = self.n_truth[start:end]
            for row, k in enumerate(self.top_n):
                h = hits[:, :k]
                count = h.sum(1)
                dcg = (h * self.discounts[:k]).sum(1)
                ideal = self.idcg[torch.clamp(n_truth, max=k).long() - 1]
                sums[row, 0] += count.sum()
                sums[row, 1] += (count / n_truth).sum()
                sums[row, 2] += (dcg / ideal).sum()
                if self.popularity is not None:
                    sums[row, 3] += self.popularity[items[:, :k]].mean(1).sum()
        sums = sums.cpu().numpy()
        total_truth = float(self.n_truth.sum().item())
        out: dict[str, float] = {}
        over = self.average_over or n_users
        for row, k in enumerate(self.top_n):
            out[f"Hit Ratio@{k}"] = sums[row, 0] / total_truth
            out[f"Precision@{k}"] = sums[row, 0] / (over * k)
            out[f"Recall@{k}"] = sums[row, 1] / over
            out[f"NDCG@{k}"] = sums[row, 2] / over
            if self.popularity is not None:
                out[f"ARP@{k}"] = sums[row, 3] / n_users
        return {key: float(v) for key, v in out.items()}


def _pattern(mat: sp.csr_matrix) -> sp.csr_matrix:
    """The stored entries of mat (a stored zero too: _RowSlicer masks it) as ones (int8)."""
    out = sp.csr_matrix(mat, copy=True)
    out.sum_duplicates()
    out.data = np.ones(len(out.data), dtype=np.int8)
    return out


def _shares_rows(ev: "RankingEvaluator") -> bool:
    """Whether a shared ranking gives ev's users the score rows of ev's own batches bit for bit: when each of its own
    batches has 4 or more users and batch_users is 8 or more (so a chain's batches, as even as batch_users allows,
    have 4 or more rows too). MKL computes a product of 1-3 rows another way, whose rows differ in the last bits
    from the same users' rows in a larger batch."""
    n, size = len(ev.users_np), ev.batch_users
    return size >= 8 and n >= 4 and n % size not in (1, 2, 3)


class _Step:
    """Files ranked after one more masking step of a shared score row: the entries their mask adds to the step
    before, over the shared users."""

    def __init__(self, names: list[str], added: sp.csr_matrix, users: np.ndarray, device: torch.device):
        self.names = names
        self.added = _RowSlicer(added, users, device)


class _Chain:
    """Eval files ranked from one score row per user: their masks nest (each step's contains the one before)."""

    def __init__(self, evaluators: list[tuple[str, RankingEvaluator]]):
        first = evaluators[0][1]
        self.lead, self.device = first, first.device
        self.users = np.unique(np.concatenate([ev.users_np for _, ev in evaluators]))
        self.index = torch.from_numpy(self.users).to(self.device)
        self.positions = {name: torch.from_numpy(np.searchsorted(self.users, ev.users_np)).to(self.device)
                          for name, ev in evaluators}
        # as even batches as batch_users allows: 4 or more rows each (_shares_rows)
        n, size = len(self.users), first.batch_users
        bounds = np.linspace(0, n, -(-n // size) + 1).round().astype(np.int64) if n else np.zeros(1, np.int64)
        self.batches = list(zip(bounds[:-1].tolist(), bounds[1:].tolist()))
        self.steps: list[_Step] = []
        before: Optional[sp.csr_matrix] = None
        for name, ev in evaluators:
            mask = _pattern(ev.mask_matrix)
            added = mask if before is None else mask - before
            added.eliminate_zeros()
            if before is not None and added.nnz == 0:
                self.steps[-1].names.append(name)
            else:
                self.steps.append(_Step([name], added, self.users, self.device))
            before = mask

    @property
    def batch_rows(self) -> int:
        """The rows of the largest batch."""
        return max((end - start for start, end in self.batches), default=0)

    def rank(self, user_emb: torch.Tensor, item_emb: Optional[torch.Tensor],
             scores_buffer: torch.Tensor) -> list[torch.Tensor]:
        """Each step's top-k items of every shared user (rows in self.users order)."""
        k = min(self.lead.max_k, self.lead.n_items)
        ranked = [torch.empty(len(self.users), k, dtype=torch.long, device=self.device) for _ in self.steps]
        for start, end in self.batches:
            scores = scores_buffer[: end - start]
            index = self.index[start:end]
            if item_emb is not None:
                torch.mm(user_emb[index], item_emb.T, out=scores)
            else:
                torch.index_select(user_emb, 0, index, out=scores)
            if self.lead.penalty is not None:
                scores -= self.lead.penalty.to(scores.dtype)
            for step, out in zip(self.steps, ranked):
                rows, cols = step.added.block(start, end)
                scores[rows, cols] = -torch.inf
                out[start:end] = torch.topk(scores, k, dim=1).indices
        return ranked


def _contains(big: sp.csr_matrix, small: sp.csr_matrix) -> bool:
    """Whether every stored entry of small is one of big."""
    s = _pattern(small)
    return s.multiply(_pattern(big)).count_nonzero() == s.nnz


class SharedRanking:
    """Evaluates several eval files ranking each user once per chain of nested masks instead of once per file: a
    valid file masks the training items and the test files the training and valid items, so one score row per user
    serves all of them, masked step by step with a top-k after each step; each file's metrics then come from its
    users' rows, summed in its own batches. Files that differ in anything but their masks (items, depth, penalty,
    batch size, device), or whose masks do not nest, are in other chains; a file whose own batches could give other
    bits than a shared batch (_shares_rows) is evaluated alone. On the CPU the numbers are each file's own
    evaluation's bit for bit (tests/test_evaluation.py), given that MKL's product gives a row the same bits in any
    batch of 4 or more rows; on a GPU cuBLAS may not, and ties at the k-th place may then fall the other way."""

    def __init__(self, evaluators: Mapping[str, RankingEvaluator]):
        self.evaluators = dict(evaluators)
        self.alone = [name for name, ev in self.evaluators.items() if not _shares_rows(ev)]
        chains: list[list[tuple[str, RankingEvaluator]]] = []
        shared = [name for name in self.evaluators if name not in self.alone]
        for name in sorted(shared, key=lambda n: self.evaluators[n].mask_matrix.nnz):  # stable: file order
            ev = self.evaluators[name]
            for chain in chains:
                last = chain[-1][1]
                if last.ranks_like(ev) and _contains(ev.mask_matrix, last.mask_matrix):
                    chain.append((name, ev))
                    break
            else:
                chains.append([(name, ev)])
        self.chains = [_Chain(chain) for chain in chains]

    def buffers(self, like: torch.Tensor) -> EvalBuffers:
        """Buffers for one evaluation with embeddings (or a score matrix) like `like`."""
        rows = max([c.batch_rows for c in self.chains] + [ev.batch_rows for ev in self.evaluators.values()],
                   default=0)
        n_items = next(iter(self.evaluators.values())).n_items if self.evaluators else 0
        return EvalBuffers(rows, n_items, like.dtype, like.device)

    @torch.no_grad()
    def evaluate(self, user_emb: torch.Tensor, item_emb: Optional[torch.Tensor]) -> dict[str, dict[str, float]]:
        """Every file's metrics (RankingEvaluator.evaluate's), in the files' order."""
        buffers = self.buffers(user_emb)
        ranked: dict[str, torch.Tensor] = {}
        for chain in self.chains:
            for step, items in zip(chain.steps, chain.rank(user_emb, item_emb, buffers.scores)):
                for name in step.names:
                    ranked[name] = items[chain.positions[name]]
        return {name: ev.evaluate(user_emb, item_emb, buffers) if name in self.alone
                else ev.metrics(lambda start, end, r=ranked[name]: r[start:end], buffers)
                for name, ev in self.evaluators.items()}

