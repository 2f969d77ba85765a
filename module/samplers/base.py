"""The one interface every negative sampler implements, and helpers several samplers share."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, ClassVar, Optional

import numpy as np
import torch
import torch.nn as nn

from util.device import host_path
from util.scores import gathered_dots


@dataclass
class TrainBatch:
    """One training batch: ids on the device, the embeddings of this batch's forward pass, and where
    we are in training."""

    users: torch.Tensor  # (B,)
    pos: torch.Tensor  # (B,)
    cands: torch.Tensor  # (B, n_candidates) non-interacted items drawn by the numba sampler
    epoch: int  # 0-based
    max_epoch: int
    user_all: torch.Tensor  # (n_users, d) final user embeddings
    item_all: torch.Tensor  # (n_items, d) final item embeddings
    layers: Optional[torch.Tensor] = None  # (L+1, n_users + n_items, d), only for samplers with needs_layers

    def items(self, ids: torch.Tensor) -> torch.Tensor:
        """Final embeddings of the given item ids, with gradient: (*ids.shape, d)."""
        return self.item_all[ids]

    @torch.no_grad()
    def cand_scores(self, user_emb: torch.Tensor) -> torch.Tensor:
        """(B, M) scores e_u . e_c of every row's candidates, without gradient. Scores all items with one
        matrix product and gathers when that is cheaper than gathering B x M embeddings."""
        return table_scores(user_emb.detach(), self.item_all.detach(), self.cands)

    def user_layers(self) -> torch.Tensor:
        """(L+1, B, d): the batch users' embedding at every LightGCN layer."""
        assert self.layers is not None, "the sampler did not ask for layers (needs_layers)"
        return self.layers[:, self.users]

    def item_layers(self, items: torch.Tensor) -> torch.Tensor:
        """(L+1, *items.shape, d): the given items' embedding at every LightGCN layer."""
        assert self.layers is not None, "the sampler did not ask for layers (needs_layers)"
        return self.layers[:, self.user_all.shape[0] + items]


@dataclass
class NegativeOutput:
    """What a sampler hands back to the trainer."""

    # (B, d) or (B, K, d): the negatives BPR is computed against; None when they are rows of `table` (neg_items), then
    # gathered only where a loss needs them (embeddings(); the softmax losses score N per row with one product)
    neg_emb: Optional[torch.Tensor]
    reg_items: torch.Tensor  # item ids whose layer-0 rows enter the L2 term
    # the real items trained on, (B,) or (B, K); None when neg_emb is synthesised (the FHN probe then
    # maps each vector to its nearest real item)
    neg_items: Optional[torch.Tensor] = None
    losses: dict[str, tuple[float, torch.Tensor]] = field(default_factory=dict)  # name -> (weight, value)
    diagnostics: dict[str, torch.Tensor] = field(default_factory=dict)  # detached scalars, averaged per epoch
    bpr_weight: float = 1.0  # weight of the trainer's BPR term on neg_emb
    # layer-0 vectors (B, d) that enter the L2 term in place of the rows of reg_items (MixGCF's reference
    # regularises its mixed layer-0 vector); None = the rows of reg_items
    reg_emb: Optional[torch.Tensor] = None
    table: Optional[torch.Tensor] = None  # (n_items, d) final item embeddings that neg_items (or extra_items) index
    # (B, M) real items of `table` a loss other than BPR scores beside a synthesised neg_emb (CNSDiff with
    # params.cnsdiff.n_negs > 1: its negative and M = n_negs - 1 uniform ones); BPR never gets them (check_config)
    extra_items: Optional[torch.Tensor] = None

    @classmethod
    def real(cls, batch: "TrainBatch", items: torch.Tensor, **kwargs: Any) -> "NegativeOutput":
        """Real items (B,) or (B, K) of the batch's final item table as the negatives, gathered on demand."""
        return cls(None, items, items, table=batch.item_all, **kwargs)

    def embeddings(self) -> torch.Tensor:
        """The negatives' embeddings (B, d) or (B, K, d), with gradient."""
        if self.neg_emb is not None:
            return self.neg_emb
        assert self.table is not None and self.neg_items is not None, "NegativeOutput: neither neg_emb nor table"
        return self.table[self.neg_items]


class NegativeSampler(nn.Module):
    """Base class: turns (user, positive, candidates) into negatives, extra losses and diagnostics.

    negatives() must not change the sampler's state (the FHN probe calls it between epochs); a
    trainable part is trained through a loss term in NegativeOutput.losses and its own parameter group.
    """

    name: ClassVar[str] = ""
    Params: ClassVar[type] = object
    needs_layers: ClassVar[bool] = False  # True: TrainBatch.layers holds every LightGCN layer
    # True: its negatives are real items of the candidates (NegativeOutput.real) and it adds no loss term of its own,
    # so a loss other than BPR (loss.name) can train on them; the others are refused with that loss (docs/losses.md)
    real_negatives: ClassVar[bool] = False
    # True: it synthesises one negative embedding per row (neg_emb) that a loss scoring embeddings (SL, BSL, PSL; not
    # AdvInfoNCE, which weighs real items) can train on, beside params.n_negs - 1 uniform real items (extra_items);
    # the sampler's own loss terms stay (CNSDiff)
    embedding_negatives: ClassVar[bool] = False
    # one line for `python main.py --list`; a default is written as {field} and filled from Params
    # ("of M={n_candidates} candidates"), so the line states today's default
    description: ClassVar[str] = ""
    description_template: ClassVar[str] = ""  # the description as written, before its {field}s are filled

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """Fill the {field} placeholders of the class's description with its Params defaults (when the class sets
        its description or its Params)."""
        super().__init_subclass__(**kwargs)
        if "description" in cls.__dict__:
            cls.description_template = cls.__dict__["description"]
        elif "Params" not in cls.__dict__:
            return
        try:
            cls.description = cls.description_template.format_map(cls.defaults())
        except KeyError as exc:
            raise TypeError(f"{cls.__name__}.description {cls.description_template!r}: {{{exc.args[0]}}} is not a "
                            f"field of {getattr(cls.Params, '__name__', cls.Params)} with a default") from exc
        except (IndexError, ValueError) as exc:
            raise TypeError(f"{cls.__name__}.description {cls.description_template!r}: {exc} (a literal brace is "
                            f"written {{{{ or }}}})") from exc

    @classmethod
    def defaults(cls) -> dict[str, Any]:
        """The default of every field of the Params dataclass that has one (none when Params is not a dataclass)."""
        if not dataclasses.is_dataclass(cls.Params):
            return {}
        return {f.name: f.default for f in dataclasses.fields(cls.Params) if f.default is not dataclasses.MISSING}

    def __init__(self, params: Any, n_users: int, n_items: int, dim: int, device: torch.device):
        super().__init__()
        self.params = params
        self.n_users, self.n_items, self.dim, self.device = n_users, n_items, dim, device

    @property
    def n_candidates(self) -> int:
        """How many candidate items per positive the numba sampler should draw: params.n_candidates (M),
        else params.n_negs, else 1."""
        return int(getattr(self.params, "n_candidates", getattr(self.params, "n_negs", 1)))

    @staticmethod
    def negatives_per_row(params: Any) -> int:
        """How many negatives per positive a sampler with these params hands to the loss: params.n_negs where its
        rows hold several (RNS, PNS, DNS(M,N)), else 1."""
        return int(getattr(params, "n_negs", 1))

    def candidate_weights(self, degree: np.ndarray) -> Optional[np.ndarray]:
        """Unnormalised draw probability of every item given its training degree; None = uniform."""
        return None

    def negatives(self, batch: TrainBatch, user_emb: torch.Tensor, pos_emb: torch.Tensor) -> NegativeOutput:
        """Negatives for one batch: user_emb and pos_emb are the (B, d) final embeddings of the batch's
        users and positives; the candidates are batch.cands (batch.items(ids) gives their embeddings,
        batch.cand_scores(user_emb) their scores)."""
        raise NotImplementedError

    def param_groups(self) -> list[dict[str, Any]]:
        """Optimiser parameter groups of the sampler's own trainable parts (none by default)."""
        return []

    def on_epoch_end(self, epoch: int) -> None:
        """Hook called after each training epoch."""

    def describe(self) -> dict[str, Any]:
        """The settings to log and store with the results."""
        return {"sampler": self.name, **dataclasses.asdict(self.params)}


def table_scores(user_emb: torch.Tensor, table: torch.Tensor, ids: torch.Tensor, chunk: Optional[int] = None) -> torch.Tensor:
    """(B, M) scores user_emb[b] . table[ids[b, m]], without gradient. On the CPU (float32) a numba kernel
    computes exactly these B x M dot products (util.scores); elsewhere `torch_table_scores`."""
    user_emb, table = user_emb.detach(), table.detach()
    if host_path(user_emb) and user_emb.dtype == torch.float32 and table.dtype == torch.float32:
        return torch.from_numpy(gathered_dots(user_emb.numpy(), table.numpy(), ids.numpy()))
    return torch_table_scores(user_emb, table, ids, chunk)


SCORE_BLOCK = 2**26  # scores per block of torch_table_scores off the CPU (256 MB of float32)


def torch_table_scores(user_emb: torch.Tensor, table: torch.Tensor, ids: torch.Tensor,
                       chunk: Optional[int] = None) -> torch.Tensor:
    """table_scores in torch (any device). When the table has at most 64 M rows, blocks of `chunk` users are
    scored against the whole table (one product) and gathered: on a GPU a product costs far less per value
    than gathering B x M embedding rows; otherwise the rows are gathered. Blocks: 128 users on the CPU (cache-
    sized), elsewhere as many as SCORE_BLOCK scores allow (a few launches per batch, not a hundred)."""
    with torch.no_grad():
        user_emb, table = user_emb.detach(), table.detach()
        rows, m = ids.shape
        if chunk is None:
            chunk = 128 if user_emb.device.type == "cpu" else max(128, SCORE_BLOCK // max(1, table.shape[0]))
        if table.shape[0] > 64 * m:
            return torch.einsum("bd,bmd->bm", user_emb, table[ids])
        out = torch.empty(rows, m, dtype=user_emb.dtype, device=user_emb.device)
        buf = torch.empty(min(chunk, rows), table.shape[0], dtype=user_emb.dtype, device=user_emb.device)
        table_t = table.T
        for start in range(0, rows, chunk):
            end = min(rows, start + chunk)
            scores = torch.mm(user_emb[start:end], table_t, out=buf[: end - start])
            torch.gather(scores, 1, ids[start:end], out=out[start:end])
        return out


def pick(values: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """values[b, index[b]] for (B, M, ...) values and (B,) or (B, N) index (gradient flows to values)."""
    rows = torch.arange(values.shape[0], device=values.device)
    if index.dim() == 1:
        return values[rows, index]
    return values[rows.unsqueeze(1), index]
