"""ADAR (reconstruction): transition point, scan, generation modes, denoiser learning, warm-up, runs."""
from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch

from conf.params import ADARParams
from module.samplers.adar import ADARSampler
from module.samplers.base import TrainBatch
from tests.test_end_to_end import _run


def _sampler(device, **kw):
    torch.manual_seed(0)
    return ADARSampler(ADARParams(**kw), 10, 10, 8, device).to(device)


def _leaf(device, *shape):
    """torch.randn(*shape, requires_grad=True), on device (the same draw on the CPU)."""
    return torch.randn(*shape).to(device).requires_grad_(True)


def _closed_form(sampler, s_pos, s_neg):
    """t* by hand: a loop over the schedule table."""
    p = sampler.params
    sqrt_ab = sampler.diffusion.alphas_cumprod[1:].float().sqrt().cpu().numpy()  # float32 roots
    out = []
    for sp, sn in zip(s_pos.tolist(), s_neg.tolist()):
        if sp <= sn:
            out.append(p.t_min)
        elif sn <= 0:
            out.append(p.t_max or p.steps)
        else:
            r = min(max((sn + p.kappa * (sp - sn)) / sp, p.r_min), p.r_max)
            below = [t + 1 for t in range(p.steps) if sqrt_ab[t] <= r]
            out.append(below[0] if below else p.steps)
    return out


@pytest.mark.parametrize("kw", [{}, {"kappa": 0.5}, {"schedule": "linear", "t_min": 3, "t_max": 40},
                                {"r_min": 0.3, "r_max": 0.6}])
def test_transition_point_equals_the_closed_form(device, kw):
    s = _sampler(device, **kw)
    s_pos = torch.tensor([2.0, 1.0, 1.0, 1.0, 0.5, -0.2, 3.0, 1.0, 1.0], device=device)
    s_neg = torch.tensor([1.0, 0.9, 0.1, 0.01, 0.6, -0.5, -1.0, 1.0, 0.5], device=device)
    t, rule = s.transition(s_pos, s_neg)
    assert t.tolist() == _closed_form(s, s_pos, s_neg)
    # boundary rules: row 4 is not separated (s_ui <= s_neg) -> t_min; rows 5, 6 have s_neg <= 0 < s_ui -> t_max
    assert rule.tolist() == [0, 0, 0, 0, 1, 2, 2, 1, 0]
    assert t[4].item() == s.params.t_min and t[6].item() == (s.params.t_max or s.params.steps)
    # monotone: a higher negative level (closer to the positive) means less noise
    assert t[1] <= t[2] <= t[3]


def test_kappa_moves_the_target_towards_the_positive_and_fixed_mode_ignores_scores(device):
    s_pos, s_neg = torch.tensor([1.0], device=device), torch.tensor([0.2], device=device)
    assert _sampler(device, kappa=0.5).transition(s_pos, s_neg)[0] < _sampler(device).transition(s_pos, s_neg)[0]
    t, _ = _sampler(device, timestep="fixed", fixed_t=13).transition(torch.tensor([1.0, -1.0], device=device),
                                                                     torch.tensor([0.3, 0.0], device=device))
    assert t.tolist() == [13, 13]


def test_scan_and_closed_form_agree_on_a_linear_case(device):
    s = _sampler(device, gen_mode="forward", steps=50, scan_points=50, r_min=0.01, r_max=0.99)
    # with zero noise the forward-noised positive scores exactly sqrt(ab_t) * s_ui: the scan must find t*
    user = torch.tensor([[1.0] + [0.0] * 7]).repeat(6, 1).to(device)
    z0 = torch.zeros(6, 8)
    z0[:, 0] = torch.tensor([1.0, 2.0, 0.7, 1.5, 3.0, 1.0])
    z0 = z0.to(device)
    s_neg = torch.tensor([0.5, 0.3, 0.6, 1.4, 0.1, 0.95], device=device)
    closed, rule = s.transition(z0[:, 0], s_neg)
    assert (rule == 0).all()
    scanned = s.scan(z0, s_neg, user, user, torch.zeros_like(z0), torch.ones((), device=device))
    assert scanned.tolist() == closed.tolist()


@pytest.mark.parametrize("mode", ["reverse", "onestep", "forward"])
def test_generation_modes_shape_and_detached(device, mode):
    s = _sampler(device, gen_mode=mode)
    z0 = _leaf(device, 12, 8)
    user = _leaf(device, 12, 8)
    t = torch.randint(1, 51, (12,)).to(device)
    out = s.generate(z0, t, user, torch.randn(12, 8).to(device))
    assert out.shape == (12, 8) and not out.requires_grad and torch.isfinite(out).all()
    if mode == "reverse":  # rows at t = 0 after stepping: with a zero-noise, zero-step case z0 comes back
        same = s.generate(z0.detach(), torch.zeros(12, dtype=torch.long, device=device), user,
                          torch.randn(12, 8).to(device))
        assert torch.allclose(same, z0.detach())


def test_the_denoiser_learns_a_toy_distribution(device):
    torch.manual_seed(1)
    s = _sampler(device, hidden=64)
    opt = torch.optim.Adam(s.net.parameters(), lr=1e-3)
    centres = (torch.randn(4, 8) * 2).to(device)
    user = torch.randn(4, 8).to(device)

    def loss():
        k = torch.randint(0, 4, (256,)).to(device)
        z0 = centres[k] + 0.05 * torch.randn(256, 8).to(device)
        t = torch.randint(1, 51, (256,)).to(device)
        eps = torch.randn_like(z0)
        return torch.nn.functional.mse_loss(s.net(s.diffusion.q_sample(z0, t, eps), t, user[k]), eps)
    with torch.no_grad():
        start = np.mean([loss().item() for _ in range(10)])
    for _ in range(400):
        opt.zero_grad()
        value = loss()
        value.backward()
        opt.step()
    with torch.no_grad():
        end = np.mean([loss().item() for _ in range(10)])
    assert end < 0.6 * start


def _batch(device, epoch, b=16, m=4):
    """A batch drawn on the CPU from its own generator (the same on every device), moved to device."""
    g = torch.Generator().manual_seed(3)
    items = torch.randn(40, 8, generator=g).to(device)
    cands = torch.randint(0, 40, (b, m), generator=g).to(device)
    return TrainBatch(torch.arange(b, device=device), torch.arange(b, device=device), cands, epoch, 10,
                      torch.randn(b, 8, generator=g).to(device), items)


def test_warm_up_epochs_use_plain_bpr_then_generation_starts(device):
    s = _sampler(device, warmup_epochs=2)
    user, pos = torch.randn(16, 8).to(device), torch.randn(16, 8).to(device)
    early = s.negatives(_batch(device, 1), user, pos)
    b = _batch(device, 1)
    assert torch.equal(early.neg_emb, b.item_all[b.cands[:, 0]]) and torch.equal(early.neg_items, b.cands[:, 0])
    assert set(early.losses) == {"adar_denoiser"} and early.bpr_weight == 1.0
    late = s.negatives(_batch(device, 2), user, pos)
    assert late.neg_items is None and set(late.losses) == {"adar_denoiser", "bpr_rand"}
    assert late.bpr_weight == s.params.lambda_g and not late.neg_emb.requires_grad
    assert {"t_star_mean", "t_star_q50", "rule_closed", "gen_below_pos", "gen_below_neg"} <= set(late.diagnostics)
    replace = _sampler(device, warmup_epochs=0, loss_mode="replace").negatives(_batch(device, 0), user, pos)
    assert set(replace.losses) == {"adar_denoiser"}


def test_seeded_generation_is_deterministic(device):
    outs = []
    for _ in range(2):
        s = _sampler(device, warmup_epochs=0)
        torch.manual_seed(9)
        batch = _batch(device, 0)
        outs.append(s.negatives(batch, torch.randn(16, 8).to(device), torch.randn(16, 8).to(device)).neg_emb)
    assert torch.equal(outs[0], outs[1])


def test_two_epoch_run_on_coat_writes_its_diagnostics(shared, tmp_path, device_key):
    status, runs = _run(tmp_path, "dataset=coat", f"dataset.root={shared}", "max.epoch=2",
                        "negative.sampler=adar", "params.warmup_epochs=1", "params.scan=true", f"device={device_key}")
    assert status == 0
    rows = list(csv.DictReader((runs[0] / "epochs.csv").open()))
    assert "t_star_mean" not in rows[0] or rows[0]["t_star_mean"] == ""  # warm-up epoch: plain BPR
    for column in ("adar_denoiser", "bpr_rand", "t_star_mean", "t_star_q25", "t_star_q50", "t_star_q75",
                   "rule_closed", "rule_unseparated", "rule_negative_level", "gen_below_pos", "gen_below_neg",
                   "scan_agree", "fhn_heldout", "fhn_heldout_base", "neg_pop"):
        assert rows[1][column] != "", column
    assert 1 <= float(rows[1]["t_star_mean"]) <= 50
    assert json.loads((runs[0] / "metrics.json").read_text())["sampler"]["timestep"] == "adaptive"


def test_the_precomputed_step_equals_the_network(device):
    s = _sampler(device)
    z, user = torch.randn(9, 8).to(device), torch.randn(9, 8).to(device)
    t = torch.randint(1, 51, (9,)).to(device)
    # the network by its definition: the MLP on the concatenation [z_t ; W PE(t) ; e_u]
    defined = s.net.net(torch.cat([z, s.net.time(s.net.pe[t]), user], dim=-1))
    torch.testing.assert_close(s.net(z, t, user), defined, rtol=1e-5, atol=1e-6)
    user_part, time_part = s.net.fixed_parts(user)
    torch.testing.assert_close(s.net.step(z, t, user_part, time_part), defined, rtol=1e-5, atol=1e-6)
    # in place in larger work buffers (generation uses their first rows as the active rows shrink)
    hidden = s.net.net[0].out_features
    nan = float("nan")
    work = (torch.full((20, hidden), nan, device=device), torch.full((20, hidden), nan, device=device),
            torch.zeros(20, 8, device=device))
    torch.testing.assert_close(s.net.step(z, t, user_part, time_part, work), defined, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(work[2][:9], defined, rtol=1e-5, atol=1e-6)
    # forward() (the training path) gives every weight the gradient of the defined network
    weights = list(s.net.parameters())
    g = torch.randn(9, 8).to(device)
    expected = torch.autograd.grad((defined * g).sum(), weights)
    got = torch.autograd.grad((s.net(z, t, user) * g).sum(), weights)
    for e, a in zip(expected, got):
        assert a.abs().sum() > 0
        torch.testing.assert_close(a, e, rtol=1e-5, atol=1e-6)


def test_the_benchmark_counts_the_noise_network_flops():
    """bench.bench_epoch's floor of ADAR: training forward/backward as torch's FLOP counter counts them,
    and ceil(t* / stride) network calls per row in reverse generation."""
    from torch.utils.flop_counter import FlopCounterMode
    from bench.bench_epoch import adar_noise_net_gflop
    s = ADARSampler(ADARParams(), 10, 10, 16, torch.device("cpu"))  # CPU: counts the CPU path's network calls
    rows, hidden = 64, s.params.hidden
    z, user, t = torch.randn(rows, 16), torch.randn(rows, 16), torch.randint(1, 51, (rows,))
    est = adar_noise_net_gflop(rows, t, 16, hidden, s.params.reverse_stride)
    with FlopCounterMode(display=False) as forward:
        out = s.net(z, t, user)
    with FlopCounterMode(display=False) as backward:
        torch.nn.functional.mse_loss(out, torch.randn(rows, 16)).backward()
    time_part = 2 * (s.params.steps + 1) * (s.params.time_emb * 16 + 16 * hidden) / 1e9  # (T+1)-row table
    assert est["train_forward"] + time_part == pytest.approx(forward.get_total_flops() / 1e9, rel=1e-6)
    assert est["train_backward"] == pytest.approx(backward.get_total_flops() / 1e9, rel=0.05)
    calls = []
    step = s.net.step
    s.net.step = lambda z_a, *a, **k: (calls.append(len(z_a)), step(z_a, *a, **k))[1]
    s.generate(z, t, user, torch.randn(rows, 16))
    per_call = 2 * (16 * hidden + hidden * hidden + hidden * 16)
    assert sum(calls) == int(torch.ceil(t / s.params.reverse_stride).sum())
    assert est["generation"] == pytest.approx(sum(calls) * per_call / 1e9)


def test_reverse_generation_equals_ddim_steps_row_by_row(device):
    """The batched, sorted, in-place reverse loop against the DDIM formulas applied to each row alone."""
    torch.manual_seed(3)
    s = _sampler(device)
    rows = 7
    z0, user, noise = (torch.randn(rows, 8).to(device) for _ in range(3))
    t = torch.tensor([50, 1, 7, 25, 5, 33, 12], device=device)
    got = s.generate(z0, t, user, noise, mode="reverse")
    ab = s.diffusion.alphas_cumprod
    for r in range(rows):
        k = int(t[r])
        z = (ab[k].sqrt() * z0[r].double() + (1 - ab[k]).sqrt() * noise[r].double())
        while k > 0:
            n = max(k - s.params.reverse_stride, 0)
            with torch.no_grad():
                eps = s.net(z.float()[None], torch.tensor([k], device=device), user[r][None])[0].double()
            x0 = (z - (1 - ab[k]).sqrt() * eps) / ab[k].sqrt()
            z = ab[n].sqrt() * x0 + (1 - ab[n]).sqrt() * eps
            k = n
        torch.testing.assert_close(got[r], z.float(), rtol=1e-4, atol=1e-4)
