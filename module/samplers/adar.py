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
import torch.nn.functional as F

from conf.params import ADARParams
from module.denoiser import NoiseNet
from module.diffusion import GaussianDiffusion, make_betas
from module.samplers.base import NegativeOutput, NegativeSampler, TrainBatch
from util.loss import bpr_loss

RULES = ("closed", "unseparated", "negative_level")  # how t* was set: closed form, t_min, t_max


class ADARSampler(NegativeSampler):
    """Adaptive-timestep diffusion negatives (a reconstruction), with fixed-timestep controls."""

    name = "adar"
    Params = ADARParams
    description = "ADAR (reconstruction): diffusion negative at a per-pair score-aware transition timestep"

    def __init__(self, params: ADARParams, n_users: int, n_items: int, dim: int, device: torch.device):
        super().__init__(params, n_users, n_items, dim, device)
        p = params
        # steps t = 0..T, alpha_bar_0 = 1 (no noise); the noising tables' roots taken of float32 alpha_bar
        self.diffusion = GaussianDiffusion(make_betas(p.schedule, p.steps, 1.0, 1e-4, 0.02), clean_step=True,
                                           sqrt_dtype=torch.float32, ddim_stride=p.reverse_stride)
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
        sqrt_ab = self.diffusion.sqrt_ab[1:].to(ratio.dtype)  # decreasing in t = 1..T
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
    @torch.no_grad()
    def generate(self, z0: torch.Tensor, t: torch.Tensor, user: torch.Tensor, noise: torch.Tensor,
                 mode: Optional[str] = None) -> torch.Tensor:
        """Generated vectors (standardised space) from z0 noised to per-row t, in the given mode."""
        mode = mode or self.params.gen_mode
        z = self.diffusion.q_sample(z0, t, noise)
        if mode == "forward":
            return z
        if mode == "onestep":
            return self.diffusion.x0_from_eps(z, t, self.net(z, t, user))
        # rows sorted by t, descending: the rows still stepping are always a prefix (no gathers)
        order = torch.argsort(t, descending=True, stable=True)
        cur, z = t[order].clone(), z[order]
        user_part, time_part = self.net.fixed_parts(user[order])
        hidden = self.params.hidden
        work = (z.new_empty(len(z), hidden), z.new_empty(len(z), hidden), torch.empty_like(z))
        z = self.diffusion.ddim_reverse_(
            lambda z_a, t_a: self.net.step(z_a, t_a, user_part[:len(z_a)], time_part, work), z, cur)
        out = torch.empty_like(z)
        out[order] = z
        return out

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
        denoiser_loss = F.mse_loss(self.net(self.diffusion.q_sample(z0, t_train, eps), t_train, user), eps)
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
