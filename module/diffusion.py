"""Gaussian diffusion in the embedding space (x0-prediction), with the causal KL regulariser.

Schedule tables are float64 buffers; they are cast to the input's dtype when applied.
"""
from __future__ import annotations

from typing import Callable, Union

import numpy as np
import torch
import torch.nn as nn

Step = Union[int, torch.Tensor]


def make_betas(schedule: str, steps: int, noise_scale: float, noise_min: float, noise_max: float,
               max_beta: float = 0.999) -> np.ndarray:
    """'linear': betas on a line; 'linear-var': 1 - alpha_bar on a line, betas from consecutive ratios;
    'cosine': Nichol & Dhariwal's alpha_bar(t) = cos^2(((t/T) + 0.008) / 1.008 * pi/2) (noise_* ignored)."""
    if schedule == "cosine":
        grid = np.arange(steps + 1, dtype=np.float64) / steps
        f = np.cos((grid + 0.008) / 1.008 * np.pi / 2) ** 2
        return np.minimum(1.0 - f[1:] / f[:-1], max_beta)
    start, end = noise_scale * noise_min, noise_scale * noise_max
    if schedule == "linear":
        return np.linspace(start, end, steps, dtype=np.float64)
    if schedule == "linear-var":
        alpha_bar = 1.0 - np.linspace(start, end, steps, dtype=np.float64)
        betas = [1.0 - alpha_bar[0]]
        betas += [min(1.0 - alpha_bar[t] / alpha_bar[t - 1], max_beta) for t in range(1, steps)]
        return np.array(betas, dtype=np.float64)
    raise ValueError(f"unknown schedule {schedule!r} (linear-var | linear | cosine)")


class GaussianDiffusion(nn.Module):
    """Forward noising, posterior, x0-prediction reverse steps, SNR weights and the causal KL."""

    def __init__(self, betas: np.ndarray):
        super().__init__()
        betas = np.asarray(betas, dtype=np.float64)
        self.steps = len(betas)
        alphas = 1.0 - betas
        ab = np.cumprod(alphas)
        ab_prev = np.concatenate([[1.0], ab[:-1]])
        post_var = betas * (1.0 - ab_prev) / (1.0 - ab)
        tables = {
            "betas": betas,
            "alphas_cumprod": ab,
            "alphas_cumprod_prev": ab_prev,
            "sqrt_ab": np.sqrt(ab),
            "sqrt_one_minus_ab": np.sqrt(1.0 - ab),
            "posterior_variance": post_var,
            # log-variance with the t = 0 entry (zero variance) replaced by the t = 1 one
            "posterior_log_variance_clipped": np.log(np.append(post_var[1], post_var[1:]) if self.steps > 1
                                                     else post_var),
            "coef1": betas * np.sqrt(ab_prev) / (1.0 - ab),
            "coef2": (1.0 - ab_prev) * np.sqrt(alphas) / (1.0 - ab),
            "snr": ab / (1.0 - ab),
        }
        for name, values in tables.items():
            self.register_buffer(name, torch.from_numpy(np.asarray(values, dtype=np.float64)), persistent=False)

    @staticmethod
    def _at(table: torch.Tensor, t: Step, like: torch.Tensor) -> torch.Tensor:
        """table[t] cast to like's dtype, shaped to broadcast over rows."""
        value = table[t].to(like.dtype)
        return value.unsqueeze(-1) if isinstance(t, torch.Tensor) else value

    def q_sample(self, x0: torch.Tensor, t: Step, noise: torch.Tensor) -> torch.Tensor:
        """x_t = sqrt(alpha_bar_t) x0 + sqrt(1 - alpha_bar_t) noise."""
        return self._at(self.sqrt_ab, t, x0) * x0 + self._at(self.sqrt_one_minus_ab, t, x0) * noise

    def posterior_mean(self, x0_hat: torch.Tensor, x_t: torch.Tensor, t: Step) -> torch.Tensor:
        """Mean of q(x_{t-1} | x_t, x0_hat) = coef1_t x0_hat + coef2_t x_t."""
        return self._at(self.coef1, t, x_t) * x0_hat + self._at(self.coef2, t, x_t) * x_t

    def reverse_step(self, model: Callable[[torch.Tensor, int], torch.Tensor], x: torch.Tensor, k: int) -> torch.Tensor:
        """One deterministic reverse step (no added noise) with an x0-predicting model."""
        return self.posterior_mean(model(x, k), x, k)

    def loss_weights(self, t: torch.Tensor) -> torch.Tensor:
        """SNR_{t-1} - SNR_t per row, 1 where t = 0 (float64)."""
        prev = self.snr[torch.clamp(t - 1, min=0)]
        return torch.where(t == 0, torch.ones_like(prev), prev - self.snr[t])

    def causal_kl(self, x0_hat: torch.Tensor, x_prev: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """mean over all elements of KL(N(x0_hat, e^{lv_t}) || N(x'_{t-1}, e^{lv_{t-1}})), lv_{t-1} := 0 at t = 0."""
        lv = self.posterior_log_variance_clipped
        lv1 = self._at(lv, t, x0_hat)
        lv2 = torch.where(t == 0, torch.zeros_like(t, dtype=lv.dtype), lv[torch.clamp(t - 1, min=0)])
        lv2 = lv2.to(x0_hat.dtype).unsqueeze(-1)
        kl = 0.5 * (-1.0 + lv2 - lv1 + torch.exp(lv1 - lv2) + (x0_hat - x_prev) ** 2 * torch.exp(-lv2))
        return kl.mean()

    def training_losses(self, model: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], x0: torch.Tensor,
                        causal_weight: float, reweight: bool = True) -> dict[str, torch.Tensor]:
        """Diffusion loss on x0: mean(w_t * mse) + causal_weight * KL, with t uniform and one eps per row."""
        t = torch.randint(0, self.steps, (x0.shape[0],), device=x0.device)
        noise = torch.randn_like(x0)
        x_t = self.q_sample(x0, t, noise)
        x_prev = self.q_sample(x0, torch.clamp(t - 1, min=0), noise)  # same eps
        x0_hat = model(x_t, t)
        mse = ((x0 - x0_hat) ** 2).mean(dim=-1)
        weights = self.loss_weights(t).to(x0.dtype) if reweight else torch.ones_like(mse)
        weighted = (weights * mse).mean()
        kl = self.causal_kl(x0_hat, x_prev, t)
        return {"loss": weighted + causal_weight * kl, "mse": mse.mean(), "weighted_mse": weighted, "kl": kl}
