"""module/diffusion.py, the process both diffusion samplers share, against the naive formulas: the schedules'
betas and alpha_bar, forward noising's mean and variance, x0 from eps, the x0-prediction posterior step and chain
(DDPM), and the deterministic DDIM jumps (host and device paths)."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import util.device
from module.diffusion import GaussianDiffusion, make_betas


def _cosine_f(t: float, steps: int) -> float:
    return math.cos((t / steps + 0.008) / 1.008 * math.pi / 2) ** 2


def _cumprod(values) -> list[float]:
    out, acc = [], 1.0
    for v in values:
        acc *= v
        out.append(acc)
    return out


# ---- schedules ---------------------------------------------------------------------------
def test_linear_schedule_betas_on_a_line_and_alpha_bar_their_product():
    betas = make_betas("linear", 20, 0.1, 1e-4, 0.02)
    expected = [0.1 * 1e-4 + k * (0.1 * 0.02 - 0.1 * 1e-4) / 19 for k in range(20)]
    np.testing.assert_allclose(betas, expected, rtol=1e-12)
    d = GaussianDiffusion(betas)
    np.testing.assert_allclose(d.alphas_cumprod.numpy(), _cumprod(1 - b for b in expected), rtol=1e-12)
    np.testing.assert_allclose(d.alphas_cumprod_prev.numpy(), [1.0] + _cumprod(1 - b for b in expected)[:-1],
                               rtol=1e-12)


def test_linear_var_schedule_puts_one_minus_alpha_bar_on_a_line():
    d = GaussianDiffusion(make_betas("linear-var", 20, 0.1, 1e-4, 0.02))
    one_minus = [0.1 * 1e-4 + k * (0.1 * 0.02 - 0.1 * 1e-4) / 19 for k in range(20)]
    np.testing.assert_allclose(1 - d.alphas_cumprod.numpy(), one_minus, rtol=1e-9)
    ab = [1 - v for v in one_minus]
    np.testing.assert_allclose(d.betas.numpy(), [1 - ab[0]] + [1 - ab[t] / ab[t - 1] for t in range(1, 20)],
                               rtol=1e-9)


def test_cosine_schedule_is_nichol_and_dhariwals_alpha_bar_with_the_clean_step():
    steps = 50
    betas = make_betas("cosine", steps, 1.0, 1e-4, 0.02)
    d = GaussianDiffusion(betas, clean_step=True)
    ab = d.alphas_cumprod.numpy()
    assert ab.shape == (steps + 1,) and ab[0] == 1.0  # step 0 is the clean embedding
    # alpha_bar_t = f(t) / f(0) wherever beta is not clipped (every step but the last, beta_T -> 1 clipped to 0.999)
    np.testing.assert_allclose(ab[1:steps], [_cosine_f(t, steps) / _cosine_f(0, steps) for t in range(1, steps)],
                               rtol=1e-9)
    assert betas[-1] == 0.999 and (betas[:-1] < 0.999).all()
    assert ab[steps] == pytest.approx(ab[steps - 1] * 0.001, rel=1e-12)
    # ADAR's linear schedule: DDPM's 1e-4..0.02, the clean step first
    lin = GaussianDiffusion(make_betas("linear", 50, 1.0, 1e-4, 0.02), clean_step=True)
    np.testing.assert_allclose(lin.alphas_cumprod.numpy(), [1.0] + _cumprod(1 - b for b in np.linspace(1e-4, 0.02, 50)),
                               rtol=1e-12)
    with pytest.raises(ValueError, match="unknown schedule"):
        make_betas("quadratic", 10, 1.0, 1e-4, 0.02)


def test_noising_tables_round_alpha_bar_where_asked():
    betas = make_betas("cosine", 50, 1.0, 1e-4, 0.02)
    wide, narrow = GaussianDiffusion(betas, clean_step=True), GaussianDiffusion(betas, clean_step=True,
                                                                                sqrt_dtype=torch.float32)
    ab = wide.alphas_cumprod
    np.testing.assert_allclose(wide.sqrt_ab.numpy(), np.sqrt(ab.numpy()), rtol=1e-15)
    np.testing.assert_allclose(wide.sqrt_one_minus_ab.numpy(), np.sqrt(1 - ab.numpy()), rtol=1e-15)
    # float32: the roots of float32 alpha_bar, in float32 (ADAR's recorded numbers), held exactly in float64
    assert torch.equal(narrow.sqrt_ab.float(), ab.float().sqrt())
    assert torch.equal(narrow.sqrt_one_minus_ab.float(), (1 - ab.float()).sqrt())
    assert not torch.equal(narrow.sqrt_one_minus_ab, wide.sqrt_one_minus_ab)  # the rounding does show
    assert all(b.dtype == torch.float64 for b in narrow.buffers())


# ---- forward noising and x0 from eps -----------------------------------------------------
@pytest.mark.parametrize("clean_step", [False, True])
def test_forward_noising_has_the_closed_form_mean_and_variance(device, clean_step):
    d = GaussianDiffusion(make_betas("linear", 20, 1.0, 1e-4, 0.02), clean_step=clean_step).to(device)
    ab = d.alphas_cumprod.cpu().numpy()
    torch.manual_seed(0)
    x0 = torch.randn(4, 3, dtype=torch.float64).to(device)
    for t in (0, 7, len(ab) - 1):
        # exactly: no noise gives sqrt(ab_t) x0, no signal sqrt(1 - ab_t) noise
        zero = torch.zeros_like(x0)
        torch.testing.assert_close(d.q_sample(x0, t, zero), math.sqrt(ab[t]) * x0, rtol=1e-14, atol=0)
        torch.testing.assert_close(d.q_sample(zero, t, x0), math.sqrt(1 - ab[t]) * x0, rtol=1e-14, atol=0)
        # sampled: mean sqrt(ab_t) x0, variance 1 - ab_t per coordinate
        noise = torch.randn(200_000, 3, dtype=torch.float64).to(device)
        x_t = d.q_sample(x0[:1].expand(200_000, 3), t, noise)
        sd = math.sqrt(1 - ab[t])
        np.testing.assert_allclose(x_t.mean(0).cpu().numpy(), math.sqrt(ab[t]) * x0[0].cpu().numpy(),
                                   atol=5 * sd / math.sqrt(200_000) + 1e-12)
        np.testing.assert_allclose(x_t.var(0).cpu().numpy(), [1 - ab[t]] * 3, rtol=0.02, atol=1e-12)
    if clean_step:  # step 0 is the clean embedding itself
        assert torch.equal(d.q_sample(x0, 0, torch.randn_like(x0)), x0)
    # per-row steps and the input's dtype
    t = torch.tensor([0, 3, 19, 3], device=device)
    rows = d.q_sample(x0.float(), t, x0.float())
    assert rows.dtype == torch.float32
    expected = torch.stack([d.q_sample(x0[r].float(), int(t[r]), x0[r].float()) for r in range(4)])
    torch.testing.assert_close(rows, expected, rtol=0, atol=0)


@pytest.mark.parametrize("sqrt_dtype", [torch.float64, torch.float32])
def test_x0_from_eps_undoes_the_noising(device, sqrt_dtype):
    d = GaussianDiffusion(make_betas("cosine", 50, 1.0, 1e-4, 0.02), clean_step=True, sqrt_dtype=sqrt_dtype).to(device)
    torch.manual_seed(1)
    x0, eps = torch.randn(51, 6, dtype=torch.float64).to(device), torch.randn(51, 6, dtype=torch.float64).to(device)
    t = torch.arange(51, device=device)
    back = d.x0_from_eps(d.q_sample(x0, t, eps), t, eps)
    ab = d.alphas_cumprod.to(device).unsqueeze(-1)
    torch.testing.assert_close(back[:40], x0[:40], rtol=1e-9, atol=1e-9)  # alpha_bar -> 0 at the end: ill-posed there
    x_t = ab.sqrt() * x0 + (1 - ab).sqrt() * eps
    naive = (x_t - (1 - ab).sqrt() * eps) / ab.sqrt()
    tol = 1e-12 if sqrt_dtype == torch.float64 else 1e-6
    torch.testing.assert_close(d.x0_from_eps(x_t, t, eps)[:40], naive[:40], rtol=tol, atol=tol)
    # float32 inputs: float32 out, close to the float64 inversion
    got32 = d.x0_from_eps(x_t.float(), t, eps.float())
    assert got32.dtype == torch.float32
    torch.testing.assert_close(got32[:30], x0[:30].float(), rtol=1e-4, atol=1e-4)


# ---- the x0-prediction posterior step and chain (CNSDiff) ---------------------------------
def test_the_posterior_step_is_the_ddpm_posterior_mean():
    betas = make_betas("linear-var", 20, 0.1, 1e-4, 0.02)
    d = GaussianDiffusion(betas)
    ab = _cumprod(1 - b for b in betas)
    torch.manual_seed(2)
    x_t, x0_hat = torch.randn(5, 4, dtype=torch.float64), torch.randn(5, 4, dtype=torch.float64)
    for k in (0, 1, 9, 19):
        ab_prev = ab[k - 1] if k else 1.0
        # DDPM (Ho et al., eq. 7):
        # mu = sqrt(ab_{k-1}) beta_k / (1 - ab_k) x0 + sqrt(alpha_k) (1 - ab_{k-1}) / (1 - ab_k) x_k
        mean = (math.sqrt(ab_prev) * betas[k] / (1 - ab[k]) * x0_hat
                + math.sqrt(1 - betas[k]) * (1 - ab_prev) / (1 - ab[k]) * x_t)
        x = x_t.clone()
        got = d.posterior_step_(x, k, float(d.coef1[k]) * x0_hat)
        assert got.data_ptr() == x.data_ptr()  # in place
        torch.testing.assert_close(got, mean, rtol=1e-9, atol=1e-12)
    assert torch.equal(d.posterior_step_(x_t.clone(), 0, x0_hat), x0_hat)  # coef1_0 = 1, coef2_0 = 0


def test_the_reverse_chain_runs_the_posterior_steps_on_a_shrinking_prefix():
    betas = make_betas("linear", 8, 1.0, 1e-3, 0.1)
    d = GaussianDiffusion(betas)
    ab = _cumprod(1 - b for b in betas)
    weight = torch.randn(4, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(0)) / 2

    def x0_hat(x, k):
        return torch.tanh(x @ weight) + 0.1 * k

    calls = []

    def model(x, k, scale):
        calls.append((len(x), k))
        return scale * x0_hat(x, k)
    rows = {k: 6 if k >= 5 else 9 for k in range(8)}  # rows 6..8 join at step 4
    x = torch.randn(9, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    start = x.clone()
    got = d.reverse_chain_(model, x, 6, rows.__getitem__)
    assert got.data_ptr() == x.data_ptr() and calls == [(6, 6), (6, 5), (9, 4), (9, 3), (9, 2), (9, 1), (9, 0)]
    ref = start.clone()
    for k in range(6, -1, -1):
        ab_prev = ab[k - 1] if k else 1.0
        n = rows[k]
        ref[:n] = (math.sqrt(ab_prev) * betas[k] / (1 - ab[k]) * x0_hat(ref[:n], k)
                   + math.sqrt(1 - betas[k]) * (1 - ab_prev) / (1 - ab[k]) * ref[:n])
    torch.testing.assert_close(got, ref, rtol=1e-9, atol=1e-12)


# ---- the DDIM jumps (ADAR) -----------------------------------------------------------------
def test_the_ddim_coefficients_are_x0_from_eps_then_noising_to_the_target_step():
    d = GaussianDiffusion(make_betas("cosine", 50, 1.0, 1e-4, 0.02), clean_step=True, ddim_stride=5)
    ab = d.alphas_cumprod.tolist()
    for t in (1, 5, 6, 23, 50):
        n = max(t - 5, 0)
        # x0 = (z_t - sqrt(1 - ab_t) eps) / sqrt(ab_t); z_n = sqrt(ab_n) x0 + sqrt(1 - ab_n) eps
        a = math.sqrt(ab[n]) / math.sqrt(ab[t])
        b = math.sqrt(1 - ab[n]) - math.sqrt(ab[n]) * math.sqrt(1 - ab[t]) / math.sqrt(ab[t])
        assert d.ddim_jump[t].tolist() == pytest.approx([a, b], rel=1e-12, abs=1e-12)
    # with the true noise a jump lands exactly on the noised embedding at the target step
    x0, eps = torch.randn(3, 4, dtype=torch.float64), torch.randn(3, 4, dtype=torch.float64)
    t = torch.tensor([50, 23, 3])
    z_t = d.q_sample(x0, t, eps)
    coef = d.ddim_jump[t]
    torch.testing.assert_close(coef[:, :1] * z_t + coef[:, 1:] * eps, d.q_sample(x0, (t - 5).clamp(min=0), eps))
    with pytest.raises(ValueError, match="clean_step"):
        GaussianDiffusion(make_betas("cosine", 50, 1.0, 1e-4, 0.02), ddim_stride=5)


@pytest.mark.parametrize("device_path", [False, True])
def test_ddim_reverse_equals_the_formula_row_by_row(monkeypatch, device_path):
    monkeypatch.setattr(util.device, "FORCE_DEVICE_PATHS", device_path)  # the masked passes, also on the CPU
    d = GaussianDiffusion(make_betas("cosine", 50, 1.0, 1e-4, 0.02), clean_step=True, ddim_stride=7)
    ab = d.alphas_cumprod.tolist()
    weight = torch.randn(4, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(0)) / 2

    def eps_hat(z, t):
        return torch.sin(z @ weight) + 0.01 * t.unsqueeze(-1)
    t = torch.tensor([50, 49, 14, 7, 7, 3, 1, 0])  # sorted, descending; one row already clean
    z = torch.randn(8, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    start = z.clone()
    got = d.ddim_reverse_(eps_hat, z, t.clone())
    for r in range(8):
        k, x = int(t[r]), start[r:r + 1]
        while k > 0:
            n = max(k - 7, 0)
            e = eps_hat(x, torch.tensor([k]))
            x0 = (x - math.sqrt(1 - ab[k]) * e) / math.sqrt(ab[k])
            x, k = math.sqrt(ab[n]) * x0 + math.sqrt(1 - ab[n]) * e, n
        torch.testing.assert_close(got[r:r + 1], x, rtol=1e-9, atol=1e-9)
    assert torch.equal(got[7], start[7])  # t = 0: untouched
