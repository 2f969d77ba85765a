"""The networks of the diffusion samplers (their process is module/diffusion.py): CNSDiff's MLP denoiser
f(x_t, t[, e_u]) -> x0_hat (sinusoidal time embedding, L2-normalised and dropped-out input, one tanh hidden layer)
and ADAR's noise network eps(z_t, t, e_u) (two SiLU hidden layers). Their time branches are computed once per
timestep (a table), not per row."""
from __future__ import annotations

import math
from typing import Optional, Union

import torch
import torch.nn as nn
import torch.nn.functional as F

from util.device import host_path

# byte -> its 8 bits as floats, times 1 / (1 - 0.5): the inverted-dropout mask for p = 0.5
_HALF_LUT = ((torch.arange(256).unsqueeze(-1) >> torch.arange(8)) & 1).float() * 2.0


def inverted_dropout(x: torch.Tensor, p: float, out: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Inverted dropout (into `out` when given). On the CPU with p = 0.5 each random byte gives 8 fair
    keep/drop bits (looked up as a scaled float mask): the same distribution as F.dropout, several times
    cheaper than torch's CPU bernoulli sampler. Elsewhere it is F.dropout."""
    if p != 0.5 or not host_path(x):
        dropped = F.dropout(x, p, training=True)
        return dropped if out is None else out.copy_(dropped)
    n = x.numel()
    raw = torch.randint(0, 256, ((n + 7) // 8,))
    return torch.mul(x, F.embedding(raw, _HALF_LUT).view(-1)[:n].view(x.shape), out=out)


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding of integer steps: [cos(t f), sin(t f)], f = max_period^(-k/half)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t.float().unsqueeze(-1) * freqs
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


class Denoiser(nn.Module):
    """[x (d), time (time_emb)[, user (d)]] -> Linear -> tanh -> Linear(d); predicts x0.

    Computed as: normalise rows, inverted dropout, then the first Linear. The row normalisation is
    applied after the matrix product (the same number, one pass less) and the time branch enters as
    a per-step bias."""

    def __init__(self, dim: int, steps: int, hidden: int = 64, time_emb: int = 64, dropout: float = 0.5,
                 norm_input: bool = True, user_condition: bool = False):
        super().__init__()
        self.dim, self.steps, self.time_dim = dim, steps, time_emb
        self.norm_input, self.p_drop, self.user_condition = norm_input, dropout, user_condition
        self.emb_layer = nn.Linear(time_emb, time_emb)
        self.in_layer = nn.Linear(dim + time_emb + (dim if user_condition else 0), hidden)
        self.out_layer = nn.Linear(hidden, dim)
        for layer in (self.emb_layer, self.in_layer, self.out_layer):
            fan_out, fan_in = layer.weight.shape
            nn.init.normal_(layer.weight, 0.0, math.sqrt(2.0 / (fan_in + fan_out)))
            nn.init.normal_(layer.bias, 0.0, 0.001)
        self.register_buffer("steps_idx", torch.arange(steps), persistent=False)

    def time_table(self) -> torch.Tensor:
        """(T, hidden): the time branch's contribution to the hidden layer, per step (bias included)."""
        emb = self.emb_layer(timestep_embedding(self.steps_idx, self.time_dim))
        w_time = self.in_layer.weight[:, self.dim:self.dim + self.time_dim]
        return emb @ w_time.T + self.in_layer.bias

    def user_part(self, user: torch.Tensor) -> torch.Tensor:
        """The user branch's contribution to the hidden layer (compute once, reuse over a chain)."""
        return F.linear(user, self.in_layer.weight[:, self.dim + self.time_dim:])

    @torch.no_grad()
    def step(self, x: torch.Tensor, t: int, table: torch.Tensor, user_part: Optional[torch.Tensor] = None,
             out_scale: float = 1.0, dropout: bool = True,
             work: Optional[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = None) -> torch.Tensor:
        """forward() without gradient at one step t, for the candidate chains: the same numbers (the same
        random draws for dropout), computed in place in `work` = three (rows x d, rows x hidden, rows x d)
        buffers of at least x's rows, reused over the chain instead of fresh tensors per step."""
        n = x.shape[0]
        if work is None:
            work = (torch.empty_like(x), x.new_empty(n, self.out_layer.in_features), torch.empty_like(x))
        dropped, pre, out = (w[:n] for w in work)
        if self.user_condition and user_part is None:
            raise ValueError("this denoiser is user-conditioned: pass the user part")
        scale = None
        if self.norm_input:
            scale = torch.linalg.vector_norm(x, dim=-1, keepdim=True).clamp_min(1e-12).reciprocal_()
        if dropout and self.p_drop > 0:
            x = inverted_dropout(x, self.p_drop, out=dropped)
        torch.mm(x, self.in_layer.weight[:, :self.dim].T, out=pre)
        if scale is not None:
            pre.mul_(scale)
        pre.add_(table[t])
        if self.user_condition:
            pre.add_(user_part)
        pre.tanh_()
        weight, bias = self.out_layer.weight, self.out_layer.bias
        if out_scale != 1.0:
            weight, bias = weight * out_scale, bias * out_scale
        return torch.addmm(bias, pre, weight.T, out=out)

    def forward(self, x: torch.Tensor, t: Union[int, torch.Tensor], user: Optional[torch.Tensor] = None,
                dropout: bool = True) -> torch.Tensor:
        """x0_hat for rows x at step(s) t (the training path)."""
        if self.user_condition and user is None:
            raise ValueError("this denoiser is user-conditioned: pass the user embeddings")
        scale = None
        if self.norm_input:
            scale = 1.0 / torch.linalg.vector_norm(x, dim=-1, keepdim=True).clamp_min(1e-12)
        if dropout and self.p_drop > 0:
            x = inverted_dropout(x, self.p_drop)
        table = self.time_table()
        pre = x @ self.in_layer.weight[:, :self.dim].T
        pre = torch.addcmul(table[t], pre, scale) if scale is not None else pre + table[t]
        if self.user_condition:
            pre = pre + self.user_part(user)
        return self.out_layer(torch.tanh(pre))


class NoiseNet(nn.Module):
    """eps_theta(z_t, t, e_u): an MLP on [z_t ; W PE(t) ; e_u] with two SiLU hidden layers."""

    def __init__(self, dim: int, steps: int, hidden: int, time_emb: int):
        super().__init__()
        self.time = nn.Linear(time_emb, dim)
        self.net = nn.Sequential(nn.Linear(3 * dim, hidden), nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU(),
                                 nn.Linear(hidden, dim))
        self.register_buffer("pe", timestep_embedding(torch.arange(steps + 1), time_emb), persistent=False)

    def forward(self, z: torch.Tensor, t: torch.Tensor, user: torch.Tensor) -> torch.Tensor:
        """Predicted noise for rows z at integer steps t (1..T) given the (detached) user embeddings.
        The first layer on the concatenation, computed by parts: its time part is a (T+1)-row table, so
        the time projection runs on T+1 rows instead of one per row (the same function)."""
        user_part, time_part = self.fixed_parts(user)
        d = z.shape[-1]
        # F.embedding rather than time_part[t]: the same rows, but its backward is a scatter-add into the T+1
        # rows instead of indexing's accumulate-put, much cheaper on the CPU (docs/speed.md)
        hidden = F.linear(z, self.net[0].weight[:, :d]) + user_part + F.embedding(t, time_part)
        return self.net[1:](hidden)

    def fixed_parts(self, user: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The first layer's user part (+ bias) per row and its time part per step (T+1 rows)."""
        first = self.net[0]
        d = user.shape[-1]
        user_part = F.linear(user, first.weight[:, 2 * d:], first.bias)
        time_part = F.linear(self.time(self.pe), first.weight[:, d:2 * d])
        return user_part, time_part

    @torch.no_grad()
    def step(self, z: torch.Tensor, t: torch.Tensor, user_part: torch.Tensor, time_part: torch.Tensor,
             work: Optional[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = None) -> torch.Tensor:
        """forward() without gradient from the precomputed fixed parts, for repeated calls on the same
        users (generation). In place in `work` = (rows x hidden, rows x hidden, rows x d) buffers of at
        least z's rows when given: no fresh tensors per call (each step is a few small products, and
        allocating and faulting in fresh buffers cost as much as the arithmetic)."""
        n, d = z.shape
        first, second, last = self.net[0], self.net[2], self.net[4]
        if work is None:
            work = (z.new_empty(n, first.out_features), z.new_empty(n, second.out_features), z.new_empty(n, d))
        h1, h2, out = (w[:n] for w in work)
        torch.index_select(time_part, 0, t, out=h1)
        h1.add_(user_part).addmm_(z, first.weight[:, :d].t())
        F.silu(h1, inplace=True)
        torch.addmm(second.bias, h1, second.weight.t(), out=h2)
        F.silu(h2, inplace=True)
        return torch.addmm(last.bias, h2, last.weight.t(), out=out)
