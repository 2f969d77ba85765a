"""CNSDiff: negatives synthesised by latent diffusion from the positive, the hardest candidate per row
mixed with the random negative under a Beta curriculum, plus an item-side contrastive term and the
diffusion loss with its causal regulariser (docs/cnsdiff.md, "The method")."""
from __future__ import annotations

from typing import Any, Optional

import torch
import torch.nn.functional as F

from conf.params import CNSDIFF_PRESETS, CNSDIFF_SWITCHES, CNSDiffParams
from module.denoiser import Denoiser
from module.diffusion import GaussianDiffusion, make_betas
from module.samplers.base import NegativeOutput, NegativeSampler, TrainBatch
from util.loss import Workspace, shared_logsumexp


class CNSDiffSampler(NegativeSampler):
    """The `cnsdiff` sampler; presets `official` (released code) and `paper` (paper's description)."""

    name = "cnsdiff"
    embedding_negatives = True
    Params = CNSDiffParams
    description = ("CNSDiff: diffusion-synthesised negatives, Beta curriculum, causal regulariser "
                   f"(presets {'|'.join(CNSDIFF_PRESETS)})")

    def __init__(self, params: CNSDiffParams, n_users: int, n_items: int, dim: int, device: torch.device):
        super().__init__(params, n_users, n_items, dim, device)
        p = params
        self.diffusion = GaussianDiffusion(make_betas(p.schedule, p.steps, p.noise_scale, p.noise_min,
                                                      p.noise_max, p.max_beta))
        self.denoiser = Denoiser(dim, p.steps, p.hidden, p.time_emb, p.dropout, p.norm_input, p.user_condition)
        self.denoiser.requires_grad_(p.train_denoiser)
        # chains ordered by descending start step, so the chains still running are always a prefix
        self.starts = sorted(p.start_steps(), reverse=True)
        self.cl_workspace = Workspace()
        self.register_buffer("start_t", torch.tensor([s - 1 for s in self.starts]), persistent=False)

    def param_groups(self) -> list[dict[str, Any]]:
        """The denoiser's own Adam group (lr denoiser_lr) when train_denoiser is on."""
        if not self.params.train_denoiser:
            return []
        return [{"params": list(self.denoiser.parameters()), "lr": self.params.denoiser_lr}]

    @torch.no_grad()
    def generate(self, pos_emb: torch.Tensor, user_emb: Optional[torch.Tensor]) -> torch.Tensor:
        """Candidates (n_starts, B, d): the positive noised to step s-1, then denoised (all chains batched)."""
        p, steps = self.params, self.diffusion.steps
        n_chains, rows = len(self.starts), pos_emb.shape[0]
        noise = torch.randn(n_chains, rows, self.dim, device=pos_emb.device, dtype=pos_emb.dtype)
        x = self.diffusion.q_sample(pos_emb.unsqueeze(0), self.start_t.view(-1, 1), noise)  # (n_chains, B, d)
        x = x.reshape(n_chains * rows, self.dim)
        user_part = self.denoiser.user_part(user_emb).repeat(n_chains, 1) if user_emb is not None else None
        table = self.denoiser.time_table()
        top = max(self.starts) - 1 if p.denoise_from_start else steps - 1
        work = (torch.empty_like(x), x.new_empty(len(x), self.denoiser.out_layer.in_features), torch.empty_like(x))

        def active_rows(k: int) -> int:
            """official: every chain runs all T steps; paper: a chain runs from its own start step down."""
            return (n_chains if not p.denoise_from_start else sum(1 for s in self.starts if s - 1 >= k)) * rows

        def scaled_x0(cur: torch.Tensor, k: int, c1: float) -> torch.Tensor:
            """c1 * f(cur, k), c1 folded into the denoiser's output layer, in the reused buffers."""
            return self.denoiser.step(cur, k, table, user_part[:len(cur)] if user_part is not None else None,
                                      out_scale=c1, dropout=p.dropout_at_generation, work=work)
        self.diffusion.reverse_chain_(scaled_x0, x, top, active_rows)  # in place: the active rows are a prefix
        return x.view(n_chains, rows, self.dim)

    def negatives(self, batch: TrainBatch, user_emb: torch.Tensor, pos_emb: torch.Tensor) -> NegativeOutput:
        """Diffusion loss, hardest synthetic candidate, curriculum mix, contrastive term."""
        p = self.params
        rand_emb = batch.items(batch.cands[:, 0])
        user_cond = user_emb.detach() if p.user_condition else None
        diff = self.diffusion.training_losses(
            lambda x, t: self.denoiser(x, t, user_cond, dropout=True), pos_emb, p.causal_weight, p.reweight)
        chain_stats: dict[str, torch.Tensor] = {}
        if p.negative_source == "diffusion":
            cands = self.generate(pos_emb.detach(), user_cond)
            scores = torch.einsum("bd,cbd->cb", user_emb.detach(), cands)
            winner = scores.argmax(dim=0)
            hard = cands[winner, torch.arange(cands.shape[1], device=cands.device)]
            # how far each start step's candidate moved from the positive (relative distance)
            spread = (cands - pos_emb.detach()).norm(dim=-1) / pos_emb.detach().norm(dim=-1).clamp_min(1e-12)
            for index, s in enumerate(self.starts):
                chain_stats[f"win_s{s}"] = (winner == index).float().mean()
                chain_stats[f"dist_s{s}"] = spread[index].mean()
        else:  # ablation: the random negative takes the synthetic one's place (RNS + the contrastive term)
            hard = rand_emb
        rows = pos_emb.shape[0]  # filled on the device: no host-to-device copy per batch
        if p.curriculum == "beta":
            progress = batch.epoch / batch.max_epoch
            alpha = p.mix_alpha_start + (p.mix_alpha_end - p.mix_alpha_start) * progress
            beta = p.mix_beta_start + (p.mix_beta_end - p.mix_beta_start) * progress
            # validate_args=False: checking the parameters reads them back from the device every batch
            ratio = torch.distributions.Beta(pos_emb.new_full((rows,), alpha), pos_emb.new_full((rows,), beta),
                                             validate_args=False).sample()
        else:
            ratio = pos_emb.new_full((rows,), p.fixed_ratio)
        ratio = torch.clamp((1 - p.min_mix_ratio) * ratio + p.min_mix_ratio, 0.0, 1.0).unsqueeze(-1)
        mixed = ratio * hard + (1 - ratio) * rand_emb
        cl = self.contrastive(pos_emb, hard, rand_emb)
        diagnostics = {
            "diff_mse": diff["mse"].detach(), "diff_weighted_mse": diff["weighted_mse"].detach(),
            "causal_kl": diff["kl"].detach(), "mix_ratio": ratio.mean().detach(),
            "score_pos": (user_emb * pos_emb).sum(-1).mean().detach(),
            "score_synth": (user_emb * hard).sum(-1).mean().detach(),
            "score_rand": (user_emb * rand_emb).sum(-1).mean().detach(),
        }
        diagnostics.update(chain_stats)
        losses = {"cl": (p.cl_weight, cl), "diffusion": (p.diffusion_loss_weight, diff["loss"])}
        if p.n_negs == 1:
            return NegativeOutput(mixed, batch.cands[:, 0], None, losses, diagnostics)
        # a loss other than BPR: the mixed negative first, then the other n_negs - 1 uniform candidates
        return NegativeOutput(mixed, batch.cands, None, losses, diagnostics, table=batch.item_all,
                              extra_items=batch.cands[:, 1:])

    def contrastive(self, pos_emb: torch.Tensor, hard: torch.Tensor, rand_emb: torch.Tensor) -> torch.Tensor:
        """Item-side InfoNCE: anchor e_i, positive e_i + small noise, 2B shared negatives [h; e_j]:
        -mean(a.p)/tau + mean logsumexp_n(a.n/tau)."""
        p = self.params
        anchor = F.normalize(pos_emb, dim=-1)
        positive = F.normalize(pos_emb + p.positive_noise * torch.randn_like(pos_emb), dim=-1)
        negatives = F.normalize(torch.cat([hard, rand_emb]), dim=-1)
        pos_term = (anchor * positive).sum(-1) / p.temperature
        workspace = self.cl_workspace.get((anchor.shape[0], negatives.shape[0]), anchor)
        # unit vectors: |a.n| / tau <= 1 / tau; the synthetic rows (no gradient from the chains) are frozen
        frozen = 0 if hard.requires_grad else len(hard)
        neg_term = shared_logsumexp(anchor / p.temperature, negatives, workspace, bound=1.0 / p.temperature,
                                    frozen=frozen)
        return (-pos_term + neg_term).mean()

    def describe(self) -> dict[str, Any]:
        """Preset, the five switches, then every other setting."""
        out = super().describe()
        head = {"sampler": self.name, "preset": self.params.preset}
        head.update({k: out[k] for k in CNSDIFF_SWITCHES})
        return {**head, **{k: v for k, v in out.items() if k not in head}}
