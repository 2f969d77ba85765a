"""ADAR (Li et al., arXiv 2601.01448), reconstructed from the paper's abstract and the opening of its
method section (the rest is not public): the positive's embedding is noised, DDPM-style, to a per-pair
"transition point" t* at which its expected score falls to the user's negative level, and a negative is
generated there with a user-conditioned noise-prediction network.

Ours (each a parameter of ADARParams): standardised embeddings, a cosine schedule with T = 50, the
MLP [z_t; W PE(t); stopgrad(e_u)] -> 256 -> SiLU -> 256 -> SiLU -> eps trained every batch on detached
inputs, the closed form t* = min{t : sqrt(alpha_bar_t) <= r}, r = clip(target / s_ui, r_min, r_max),
target = s_neg + kappa (s_ui - s_neg), with boundary rules (s_ui <= s_neg -> t_min; s_neg <= 0 < s_ui ->
t_max), generation by deterministic DDIM steps back to 0 (or one x0 estimate, or z_t* itself), and the
loss BPR(u,i,j) + lambda_g BPR(u,i,generated) after a warm-up of plain BPR."""
from __future__ import annotations

from typing import Any, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from conf.params import ADARParams
from module.denoiser import timestep_embedding
from module.diffusion import make_betas
from module.samplers.base import NegativeOutput, NegativeSampler, TrainBatch
from util.device import host_path
from util.loss import bpr_loss

RULES = ("closed", "unseparated", "negative_level")  # how t* was set: closed form, t_min, t_max


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


class ADARSampler(NegativeSampler):
    """Adaptive-timestep diffusion negatives (a reconstruction), with fixed-timestep controls."""

    name = "adar"
    Params = ADARParams
    description = "ADAR (reconstruction): diffusion negative at a per-pair score-aware transition timestep"

    def __init__(self, params: ADARParams, n_users: int, n_items: int, dim: int, device: torch.device):
        super().__init__(params, n_users, n_items, dim, device)
        p = params
        ab = torch.cumprod(1.0 - torch.from_numpy(make_betas(p.schedule, p.steps, 1.0, 1e-4, 0.02)), 0)
        # index t = 0..T: alpha_bar_0 = 1 (no noise)
        ab = torch.cat([torch.ones(1, dtype=torch.float64), ab])
        self.register_buffer("ab", ab.float(), persistent=False)
        # one deterministic DDIM jump t -> n = max(t - stride, 0) as z_n = a_t z_t + b_t eps, from
        # x0 = (z_t - sqrt(1 - ab_t) eps) / sqrt(ab_t) and z_n = sqrt(ab_n) x0 + sqrt(1 - ab_n) eps
        ab_n = ab[(torch.arange(p.steps + 1) - p.reverse_stride).clamp(min=0)]
        jump = torch.stack([(ab_n / ab).sqrt(), (1 - ab_n).sqrt() - (ab_n * (1 - ab) / ab).sqrt()], 1)
        self.register_buffer("jump", jump.float(), persistent=False)
        self.net = NoiseNet(dim, p.steps, p.hidden, p.time_emb)
        self.register_buffer("quartiles", torch.tensor([0.25, 0.5, 0.75]), persistent=False)
        self.t_max = p.t_max or p.steps
        # the scan's timesteps, once, on the host: nothing read back per batch
        self.scan_grid = torch.linspace(1, p.steps, p.scan_points).round().long().tolist()

    @property
    def n_candidates(self) -> int:
        """n_ref uniform negatives per positive (the first is also BPR's random negative)."""
        return self.params.n_ref

    def param_groups(self) -> list[dict[str, Any]]:
        """The noise network's own Adam group (lr denoiser_lr)."""
        return [{"params": list(self.net.parameters()), "lr": self.params.denoiser_lr}]

    # ---- the transition point ---------------------------------------------------------
    def transition(self, s_pos: torch.Tensor, s_neg: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(t*, rule index into RULES) per row from the positive's score and the negative level."""
        p = self.params
        target = s_neg + p.kappa * (s_pos - s_neg)
        ratio = torch.clamp(target / torch.where(s_pos > 0, s_pos, torch.ones_like(s_pos)), p.r_min, p.r_max)
        sqrt_ab = self.ab[1:].sqrt()  # decreasing in t = 1..T
        # first t with sqrt(ab_t) <= r: count of steps with sqrt(ab_t) > r, plus one
        t = torch.searchsorted(-sqrt_ab, -ratio.contiguous(), right=False) + 1
        t = t.clamp(max=p.steps)
        unseparated = s_pos <= s_neg
        negative_level = (~unseparated) & (s_neg <= 0)
        t = torch.where(unseparated, torch.full_like(t, p.t_min), t)
        t = torch.where(negative_level, torch.full_like(t, self.t_max), t)
        # 0 score rule, 1 unseparated, 2 negative level (disjoint); torch.where: no boolean indexing, no read-back
        rule = torch.where(unseparated, 1, torch.where(negative_level, 2, 0)).to(t.dtype)
        if p.timestep == "fixed":
            t = torch.full_like(t, p.fixed_t)
        return t, rule

    # ---- generation --------------------------------------------------------------------
    def noised(self, z0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """z_t = sqrt(ab_t) z0 + sqrt(1 - ab_t) eps, per-row t."""
        ab = self.ab[t].unsqueeze(-1)
        return ab.sqrt() * z0 + (1 - ab).sqrt() * noise

    @torch.no_grad()
    def generate(self, z0: torch.Tensor, t: torch.Tensor, user: torch.Tensor, noise: torch.Tensor,
                 mode: Optional[str] = None) -> torch.Tensor:
        """Generated vectors (standardised space) from z0 noised to per-row t, in the given mode."""
        mode = mode or self.params.gen_mode
        z = self.noised(z0, t, noise)
        if mode == "forward":
            return z
        if mode == "onestep":
            ab = self.ab[t].unsqueeze(-1)
            return (z - (1 - ab).sqrt() * self.net(z, t, user)) / ab.sqrt()
        stride = self.params.reverse_stride
        # rows sorted by t, descending: the rows still stepping are always a prefix (no gathers)
        order = torch.argsort(t, descending=True, stable=True)
        cur, z = t[order].clone(), z[order]
        user_part, time_part = self.net.fixed_parts(user[order])
        hidden = self.params.hidden
        work = (z.new_empty(len(z), hidden), z.new_empty(len(z), hidden), torch.empty_like(z))
        if host_path(z):
            self.reverse_prefix(z, cur, user_part, time_part, work, stride)
        else:
            z = self.reverse_masked(z, cur, user_part, time_part, work, stride)
        out = torch.empty_like(z)
        out[order] = z
        return out

    def reverse_prefix(self, z: torch.Tensor, cur: torch.Tensor, user_part: torch.Tensor, time_part: torch.Tensor,
                       work: tuple[torch.Tensor, torch.Tensor, torch.Tensor], stride: int) -> None:
        """The reverse jumps in place on the rows still stepping (a prefix, read back each pass: free on the
        CPU, a device synchronisation per pass elsewhere)."""
        while True:  # at most ceil(T / stride) passes
            n = int((cur > 0).sum())
            if n == 0:
                break
            t_a, z_a = cur[:n], z[:n]
            eps = self.net.step(z_a, t_a, user_part[:n], time_part, work)
            coef = self.jump[t_a]
            z_a.mul_(coef[:, :1]).addcmul_(coef[:, 1:], eps)  # in place: z_a is the first n rows of z
            t_a.sub_(stride).clamp_(min=0)

    def reverse_masked(self, z: torch.Tensor, cur: torch.Tensor, user_part: torch.Tensor, time_part: torch.Tensor,
                       work: tuple[torch.Tensor, torch.Tensor, torch.Tensor], stride: int) -> torch.Tensor:
        """The same jumps without reading anything back: ceil(T / stride) passes over every row, rows already at
        t = 0 kept as they are (the GPU path; equal to reverse_prefix up to rounding, tests/test_gpu_path.py)."""
        for _ in range(-(-self.params.steps // stride)):
            eps = self.net.step(z, cur, user_part, time_part, work)
            coef = self.jump[cur]
            z = torch.where((cur > 0).unsqueeze(-1), z * coef[:, :1] + coef[:, 1:] * eps, z)
            cur = (cur - stride).clamp(min=0)
        return z

    @torch.no_grad()
    def scan(self, z0: torch.Tensor, s_neg: torch.Tensor, user_emb: torch.Tensor, user: torch.Tensor,
             noise: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        """t per row found by generating on a grid of timesteps: the first whose generated score is <= s_neg
        (T when none is)."""
        p = self.params
        found = torch.full((z0.shape[0],), p.steps, dtype=torch.long, device=z0.device)
        done = torch.zeros(z0.shape[0], dtype=torch.bool, device=z0.device)
        for t in self.scan_grid:
            gen = self.generate(z0, torch.full_like(found, t), user, noise) * scale
            hit = ((user_emb * gen).sum(-1) <= s_neg) & ~done
            found = torch.where(hit, torch.full_like(found, t), found)  # no boolean indexing: no read-back
            done |= hit
        return found

    # ---- the sampler --------------------------------------------------------------------
    def negatives(self, batch: TrainBatch, user_emb: torch.Tensor, pos_emb: torch.Tensor) -> NegativeOutput:
        """Denoiser loss every batch; after the warm-up, the generated negative in the BPR loss."""
        p = self.params
        j = batch.cands[:, 0]
        rand_emb = batch.items(j)
        scale = pos_emb.detach().std() if p.standardize else pos_emb.new_ones(())
        z0 = pos_emb.detach() / scale
        user = user_emb.detach()
        # the noise network learns eps on detached inputs: the recommender is not moved by this loss
        t_train = torch.randint(1, p.steps + 1, (z0.shape[0],), device=z0.device)
        eps = torch.randn_like(z0)
        denoiser_loss = F.mse_loss(self.net(self.noised(z0, t_train, eps), t_train, user), eps)
        losses = {"adar_denoiser": (1.0, denoiser_loss)}
        if batch.epoch < p.warmup_epochs:
            return NegativeOutput(rand_emb, j, j, losses)
        with torch.no_grad():
            s_pos = (user * pos_emb.detach()).sum(-1)
            s_neg = batch.cand_scores(user).mean(1)
            t_star, rule = self.transition(s_pos, s_neg)
            noise = torch.randn_like(z0)
            gen = self.generate(z0, t_star, user, noise) * scale
            s_gen = (user * gen).sum(-1)
        tf = t_star.float()
        q = torch.quantile(tf, self.quartiles)
        diagnostics = {"t_star_mean": tf.mean(), "t_star_q25": q[0], "t_star_q50": q[1], "t_star_q75": q[2],
                       "gen_below_pos": (s_gen < s_pos).float().mean(),
                       "gen_below_neg": (s_gen < s_neg).float().mean(), "s_gen": s_gen.mean()}
        for index, name in enumerate(RULES):
            diagnostics[f"rule_{name}"] = (rule == index).float().mean()
        if p.scan:
            t_scan = self.scan(z0, s_neg, user, user, noise, scale)
            spacing = (p.steps - 1) / (p.scan_points - 1)
            diagnostics["scan_agree"] = ((t_scan - t_star).abs().float() <= spacing).float().mean()
        if p.loss_mode == "augment":
            losses["bpr_rand"] = (1.0, bpr_loss(user_emb, pos_emb, rand_emb))
            return NegativeOutput(gen, j, None, losses, diagnostics, bpr_weight=p.lambda_g)
        return NegativeOutput(gen, j, None, losses, diagnostics)
