"""The Gaussian diffusion process in the embedding space, shared by the diffusion samplers (CNSDiff, ADAR), as
DiffRec splits it: here the process (schedules, forward noising, x0 from eps, the reverse steps and chains, SNR
weights, the causal KL); the networks in module/denoiser.py.

- CNSDiff (x0-prediction, DDPM indexing: steps 0..T-1): `make_betas` ('linear-var' | 'linear'), `q_sample`,
  `reverse_chain_` (the posterior-mean steps, `posterior_step_`), `training_losses` (`loss_weights`, `causal_kl`).
- ADAR (eps-prediction, `clean_step`: 0 is the clean embedding, steps 1..T): `make_betas` ('cosine' | 'linear'),
  `q_sample`, `x0_from_eps` (one-step generation), `ddim_reverse_` (deterministic DDIM jumps).

Schedule tables are float64 buffers; they are cast to the input's dtype when applied.
"""
from __future__ import annotations

from typing import Callable, Optional, Union

import numpy as np
import torch
import torch.nn as nn

from util.device import host_path

Step = Union[int, torch.Tensor]
# (rows x_k, step k, scale c) -> c * x0_hat(x_k, k): an x0-predicting model with its output scaled by c
ScaledX0Model = Callable[[torch.Tensor, int, float], torch.Tensor]
# (rows z_t, per-row steps t) -> eps_hat(z_t, t): a noise-predicting model
EpsModel = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


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
    """Forward noising, x0 from eps, x0-prediction posterior steps, DDIM jumps, SNR weights and the causal KL.

    `clean_step`: False indexes the steps 0..T-1 (DiffRec's and CNSDiff's convention; every table); True adds a
    step 0 with alpha_bar_0 = 1, the clean embedding, and indexes the noised steps 1..T (DDIM's and ADAR's; the
    noising tables and the DDIM jumps only, no posterior or SNR tables). `sqrt_dtype`: the dtype alpha_bar is
    rounded to before the square roots of the noising tables are taken (float64: CNSDiff; float32: ADAR, whose
    numbers were made that way). `ddim_stride`: build the jump table of `ddim_reverse_` (needs `clean_step`)."""

    def __init__(self, betas: np.ndarray, clean_step: bool = False, sqrt_dtype: torch.dtype = torch.float64,
                 ddim_stride: Optional[int] = None):
        super().__init__()
        betas = np.asarray(betas, dtype=np.float64)
        self.steps, self.clean_step, self.ddim_stride = len(betas), clean_step, ddim_stride
        alphas = 1.0 - betas
        ab = np.cumprod(alphas)
        noised_ab = np.concatenate([[1.0], ab]) if clean_step else ab
        if sqrt_dtype == torch.float64:
            sqrt_ab, sqrt_one_minus_ab = np.sqrt(noised_ab), np.sqrt(1.0 - noised_ab)
        else:  # alpha_bar rounded first, the roots taken in that dtype (exact in the float64 tables)
            rounded = torch.from_numpy(noised_ab).to(sqrt_dtype)
            sqrt_ab, sqrt_one_minus_ab = rounded.sqrt().double().numpy(), (1 - rounded).sqrt().double().numpy()
        tables = {"alphas_cumprod": noised_ab, "sqrt_ab": sqrt_ab, "sqrt_one_minus_ab": sqrt_one_minus_ab}
        if not clean_step:
            ab_prev = np.concatenate([[1.0], ab[:-1]])
            post_var = betas * (1.0 - ab_prev) / (1.0 - ab)
            tables.update({
                "betas": betas,
                "alphas_cumprod_prev": ab_prev,
                "posterior_variance": post_var,
                # log-variance with the t = 0 entry (zero variance) replaced by the t = 1 one
                "posterior_log_variance_clipped": np.log(np.append(post_var[1], post_var[1:]) if self.steps > 1
                                                         else post_var),
                "coef1": betas * np.sqrt(ab_prev) / (1.0 - ab),
                "coef2": (1.0 - ab_prev) * np.sqrt(alphas) / (1.0 - ab),
                "snr": ab / (1.0 - ab),
            })
            # the posterior coefficients as host floats: indexing them in a chain costs no device round trip
            self._coef1_host: list[float] = tables["coef1"].tolist()
            self._coef2_host: list[float] = tables["coef2"].tolist()
        if ddim_stride is not None:
            if not clean_step:
                raise ValueError("the DDIM jumps need clean_step=True (they end at the clean step 0)")
            tables["ddim_jump"] = self.ddim_coefficients(torch.from_numpy(noised_ab), ddim_stride).numpy()
        for name, values in tables.items():
            self.register_buffer(name, torch.from_numpy(np.asarray(values, dtype=np.float64)), persistent=False)

    @staticmethod
    def ddim_coefficients(ab: torch.Tensor, stride: int) -> torch.Tensor:
        """(T+1, 2) float64: one deterministic DDIM jump t -> n = max(t - stride, 0) as z_n = a_t z_t + b_t eps, from
        x0 = (z_t - sqrt(1 - ab_t) eps) / sqrt(ab_t) and z_n = sqrt(ab_n) x0 + sqrt(1 - ab_n) eps (ab: t = 0..T)."""
        ab_n = ab[(torch.arange(len(ab)) - stride).clamp(min=0)]
        return torch.stack([(ab_n / ab).sqrt(), (1 - ab_n).sqrt() - (ab_n * (1 - ab) / ab).sqrt()], 1)

    @staticmethod
    def _at(table: torch.Tensor, t: Step, like: torch.Tensor) -> torch.Tensor:
        """table[t] cast to like's dtype, shaped to broadcast over rows."""
        value = table[t].to(like.dtype)
        return value.unsqueeze(-1) if isinstance(t, torch.Tensor) else value

    # ---- forward noising and the x0 / eps conversion ------------------------------------
    def q_sample(self, x0: torch.Tensor, t: Step, noise: torch.Tensor) -> torch.Tensor:
        """x_t = sqrt(alpha_bar_t) x0 + sqrt(1 - alpha_bar_t) noise."""
        return self._at(self.sqrt_ab, t, x0) * x0 + self._at(self.sqrt_one_minus_ab, t, x0) * noise

    def x0_from_eps(self, x_t: torch.Tensor, t: Step, eps: torch.Tensor) -> torch.Tensor:
        """x0 = (x_t - sqrt(1 - alpha_bar_t) eps) / sqrt(alpha_bar_t): q_sample solved for x0."""
        return (x_t - self._at(self.sqrt_one_minus_ab, t, x_t) * eps) / self._at(self.sqrt_ab, t, x_t)

    # ---- x0-prediction reverse steps (CNSDiff) -------------------------------------------
    def posterior_step_(self, x: torch.Tensor, k: int, scaled_x0: torch.Tensor) -> torch.Tensor:
        """In place, no added noise: x <- coef2_k x + scaled_x0, the mean of q(x_{k-1} | x_k, x0_hat) when
        scaled_x0 = coef1_k x0_hat."""
        return x.mul_(self._coef2_host[k]).add_(scaled_x0)

    @torch.no_grad()
    def reverse_chain_(self, model: ScaledX0Model, x: torch.Tensor, top: int,
                       rows: Callable[[int], int]) -> torch.Tensor:
        """Deterministic x0-prediction reverse steps k = top..0 in place on x: at step k its first rows(k) rows take
        `posterior_step_` with model(x, k, coef1_k) = coef1_k x0_hat (the coefficient folded into the model's
        output layer). Returns x."""
        for k in range(top, -1, -1):
            cur = x[:rows(k)]
            self.posterior_step_(cur, k, model(cur, k, self._coef1_host[k]))
        return x

    # ---- eps-prediction DDIM jumps (ADAR) -------------------------------------------------
    @torch.no_grad()
    def ddim_reverse_(self, model: EpsModel, z: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Deterministic DDIM jumps t -> max(t - ddim_stride, 0) until every row is at 0, z_n = a_t z_t + b_t eps_hat,
        for rows sorted by t, descending (the rows still stepping are a prefix); t is consumed. On the host path in
        place on that prefix (its row count read back each pass: free on the CPU); elsewhere ceil(T / stride) passes
        over every row, rows already at 0 kept (no read-back; equal up to rounding, tests/test_gpu_path.py)."""
        stride = self.ddim_stride
        if host_path(z):
            while True:  # at most ceil(T / stride) passes
                n = int((t > 0).sum())
                if n == 0:
                    return z
                t_a, z_a = t[:n], z[:n]
                eps = model(z_a, t_a)
                coef = self.ddim_jump[t_a].to(z.dtype)
                z_a.mul_(coef[:, :1]).addcmul_(coef[:, 1:], eps)  # in place: z_a is the first n rows of z
                t_a.sub_(stride).clamp_(min=0)
        for _ in range(-(-self.steps // stride)):
            eps = model(z, t)
            coef = self.ddim_jump[t].to(z.dtype)
            z = torch.where((t > 0).unsqueeze(-1), z * coef[:, :1] + coef[:, 1:] * eps, z)
            t = (t - stride).clamp(min=0)
        return z

    # ---- the x0-prediction training loss (CNSDiff) ----------------------------------------
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
