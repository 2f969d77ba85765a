"""CNSDiff: schedule, reverse steps, causal KL, denoiser, chains, gradients, presets, contrastive term."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from conf.params import CNSDiffParams
from module.denoiser import Denoiser, inverted_dropout, timestep_embedding
from module.diffusion import GaussianDiffusion, make_betas
from module.samplers.base import TrainBatch
from module.samplers.cnsdiff import CNSDiffSampler
from util.loss import Workspace, shared_logsumexp, splits_frozen_grad


def _diffusion(schedule="linear-var"):
    return GaussianDiffusion(make_betas(schedule, 20, 0.1, 1e-4, 0.02))


def test_schedule_matches_reference_numbers():
    d = _diffusion()
    ab = d.alphas_cumprod.numpy()
    assert (round(ab[0], 6), round(ab[9], 6), round(ab[19], 6)) == (0.999990, 0.999047, 0.998000)
    c1 = d.coef1.numpy()
    assert (round(c1[1], 3), round(c1[9], 3), round(c1[19], 3)) == (0.913, 0.110, 0.052)
    assert d.coef1[0].item() == pytest.approx(1.0) and d.coef2[0].item() == pytest.approx(0.0)


def test_schedule_matches_float64_closed_form_and_buffers_are_float64():
    d = _diffusion()
    ab = 1.0 - np.linspace(0.1 * 1e-4, 0.1 * 0.02, 20)
    ab_prev = np.append(1.0, ab[:-1])
    beta = 1.0 - ab / ab_prev
    np.testing.assert_allclose(d.alphas_cumprod.numpy(), ab, rtol=1e-12)
    np.testing.assert_allclose(d.coef1.numpy(), beta * np.sqrt(ab_prev) / (1 - ab), rtol=1e-9)
    np.testing.assert_allclose(d.coef2.numpy(), (1 - ab_prev) * np.sqrt(1 - beta) / (1 - ab), rtol=1e-9, atol=1e-15)
    var = beta * (1 - ab_prev) / (1 - ab)
    np.testing.assert_allclose(d.posterior_log_variance_clipped.numpy(), np.log(np.append(var[1], var[1:])))
    np.testing.assert_allclose(d.snr.numpy(), ab / (1 - ab))
    buffers = dict(d.named_buffers())
    assert buffers and all(b.dtype == torch.float64 for b in buffers.values())
    lin = _diffusion("linear")
    np.testing.assert_allclose(lin.betas.numpy(), np.linspace(1e-5, 2e-3, 20))


def test_last_reverse_step_returns_the_model_output():
    d = _diffusion()
    x = torch.randn(5, 4)
    out = torch.randn(5, 4)
    assert torch.equal(d.posterior_step_(x.clone(), 0, float(d.coef1[0]) * out), out)  # c1_0 = 1, c2_0 = 0
    step = d.posterior_step_(x.clone(), 9, float(d.coef1[9]) * out)
    assert torch.allclose(step, float(d.coef1[9]) * out + float(d.coef2[9]) * x)


def test_loss_weights_and_causal_kl_by_hand():
    d = _diffusion()
    t = torch.tensor([0, 3])
    w = d.loss_weights(t)
    assert w[0] == 1.0 and w[1].item() == pytest.approx(d.snr[2].item() - d.snr[3].item())
    x0_hat = torch.tensor([[0.5, -1.0], [2.0, 0.0]], dtype=torch.float64)
    x_prev = torch.tensor([[0.0, 1.0], [1.0, 1.0]], dtype=torch.float64)
    lv = d.posterior_log_variance_clipped.numpy()

    def kl(m1, lv1, m2, lv2):
        return 0.5 * (-1 + lv2 - lv1 + math.exp(lv1 - lv2) + (m1 - m2) ** 2 * math.exp(-lv2))
    rows = [[kl(x0_hat[0, j].item(), lv[0], x_prev[0, j].item(), 0.0) for j in range(2)],
            [kl(x0_hat[1, j].item(), lv[3], x_prev[1, j].item(), lv[2]) for j in range(2)]]
    assert d.causal_kl(x0_hat, x_prev, t).item() == pytest.approx(np.mean(rows), rel=1e-9)


def test_training_losses_use_the_same_noise_and_reweight_switch():
    d = _diffusion()
    x0 = torch.randn(64, 8, dtype=torch.float64)
    seen = {}

    def model(x_t, t):
        seen["x_t"], seen["t"] = x_t, t
        return torch.zeros_like(x_t)
    torch.manual_seed(0)
    on = d.training_losses(model, x0, 0.1, reweight=True)
    eps = (seen["x_t"] - d.sqrt_ab[seen["t"]].unsqueeze(-1) * x0) / d.sqrt_one_minus_ab[seen["t"]].unsqueeze(-1)
    x_prev = d.q_sample(x0, torch.clamp(seen["t"] - 1, min=0), eps)
    assert on["kl"].item() == pytest.approx(d.causal_kl(torch.zeros_like(x0), x_prev, seen["t"]).item())
    torch.manual_seed(0)
    off = d.training_losses(model, x0, 0.1, reweight=False)
    assert off["weighted_mse"].item() == pytest.approx(off["mse"].item())
    assert on["weighted_mse"].item() > 100 * on["mse"].item()  # SNR differences are large here
    assert on["loss"].item() == pytest.approx(on["weighted_mse"].item() + 0.1 * on["kl"].item())


def _naive_denoiser(den: Denoiser, x, t, user=None):
    """Reference: normalise, concatenate [x, time(, user)], Linear, tanh, Linear (no dropout)."""
    emb = den.emb_layer(timestep_embedding(torch.as_tensor(t).reshape(-1), den.time_dim)).expand(x.shape[0], -1)
    parts = [F.normalize(x, dim=-1), emb] + ([user] if user is not None else [])
    return den.out_layer(torch.tanh(den.in_layer(torch.cat(parts, dim=-1))))


@pytest.mark.parametrize("user_condition", [False, True])
def test_fused_denoiser_matches_naive_reference(user_condition):
    torch.manual_seed(0)
    den = Denoiser(8, 20, hidden=16, time_emb=8, user_condition=user_condition)
    x, user = torch.randn(5, 8), torch.randn(5, 8) if user_condition else None
    t = torch.tensor([0, 3, 19, 7, 7])
    ref = torch.cat([_naive_denoiser(den, x[r:r + 1], t[r].item(), None if user is None else user[r:r + 1])
                     for r in range(5)])
    torch.testing.assert_close(den(x, t, user, dropout=False), ref)
    if user_condition:
        with pytest.raises(ValueError, match="user-conditioned"):
            den(x, t)


@pytest.mark.parametrize("user_condition", [False, True])
@pytest.mark.parametrize("dropout", [False, True])
def test_the_in_place_chain_step_equals_forward(user_condition, dropout):
    """Denoiser.step (no gradient, in reused buffers) computes forward()'s numbers, dropout draws included."""
    torch.manual_seed(0)
    den = Denoiser(8, 20, hidden=16, time_emb=8, user_condition=user_condition)
    x, user = torch.randn(5, 8), torch.randn(5, 8)
    table = den.time_table()
    part = den.user_part(user) if user_condition else None
    work = (torch.full((9, 8), float("nan")), torch.full((9, 16), float("nan")), torch.full((9, 8), float("nan")))
    torch.manual_seed(3)
    with torch.no_grad():
        expected = 0.25 * den(x, 7, user if user_condition else None, dropout=dropout)
    torch.manual_seed(3)
    got = den.step(x, 7, table, part, out_scale=0.25, dropout=dropout, work=work)
    torch.testing.assert_close(got, expected, rtol=1e-6, atol=1e-7)
    assert got.data_ptr() == work[2].data_ptr()  # written into the given buffer
    torch.manual_seed(3)
    torch.testing.assert_close(den.step(x, 7, table, part, out_scale=0.25, dropout=dropout), expected,
                               rtol=1e-6, atol=1e-7)  # without buffers: the same
    if user_condition:
        with pytest.raises(ValueError, match="user-conditioned"):
            den.step(x, 7, table)


def test_time_embedding_is_cos_then_sin():
    emb = timestep_embedding(torch.tensor([3]), 4)
    freqs = [1.0, 10000 ** -0.5]
    expected = [math.cos(3 * freqs[0]), math.cos(3 * freqs[1]), math.sin(3 * freqs[0]), math.sin(3 * freqs[1])]
    np.testing.assert_allclose(emb[0].numpy(), expected, rtol=1e-6)


def test_denoiser_initialisation():
    torch.manual_seed(0)
    den = Denoiser(64, 20, hidden=64, time_emb=64)
    w = den.in_layer.weight
    assert w.shape == (64, 128) and abs(w.std().item() - math.sqrt(2 / (128 + 64))) < 0.01
    assert den.in_layer.bias.abs().max() < 0.01


def test_inverted_dropout_keeps_half_and_rescales():
    torch.manual_seed(0)
    x = torch.ones(1000, 64)
    y = inverted_dropout(x, 0.5)
    assert set(y.unique().tolist()) == {0.0, 2.0}
    assert abs((y > 0).float().mean().item() - 0.5) < 0.01
    assert abs((y > 0).float().mean(0).std().item()) < 0.05  # no column bias
    torch.manual_seed(0)
    assert torch.equal(inverted_dropout(x, 0.5), y)
    z = inverted_dropout(x, 0.25)
    assert abs((z > 0).float().mean().item() - 0.75) < 0.01


def _sampler(device, **kw):
    torch.manual_seed(0)
    return CNSDiffSampler(CNSDiffParams(**kw), 10, 10, 8, device).to(device)


@pytest.mark.parametrize("preset", ["official", "paper"])
def test_batched_chains_equal_a_per_chain_loop(device, preset):
    s = _sampler(device, preset=preset, dropout_at_generation=False)
    pos, user = torch.randn(6, 8).to(device), torch.randn(6, 8).to(device)
    cond = user if s.params.user_condition else None
    torch.manual_seed(1)
    got = s.generate(pos, cond)
    torch.manual_seed(1)
    noise = torch.randn(len(s.starts), 6, 8, device=device)  # generate's draw, from the device's stream
    c1, c2 = s.diffusion.coef1.tolist(), s.diffusion.coef2.tolist()
    for c, start in enumerate(s.starts):
        x = s.diffusion.q_sample(pos, start - 1, noise[c])
        top = start - 1 if s.params.denoise_from_start else 19
        for k in range(top, -1, -1):  # the posterior mean c1_k x0_hat + c2_k x_k, one chain at a time
            x = c1[k] * s.denoiser(x, k, cond, dropout=False) + c2[k] * x
        torch.testing.assert_close(got[c], x, rtol=1e-4, atol=1e-5)


def test_chain_lengths_per_preset(device):
    calls = {}
    for preset in ("official", "paper"):
        s = _sampler(device, preset=preset)
        rows = []
        step = s.denoiser.step
        s.denoiser.step = lambda x, *a, **k: (rows.append(x.shape[0]), step(x, *a, **k))[1]
        s.generate(torch.randn(4, 8).to(device), torch.randn(4, 8).to(device) if s.params.user_condition else None)
        calls[preset] = rows
    assert calls["official"] == [12] * 20  # 3 chains x 4 rows, all 20 steps
    assert calls["paper"] == [4] * 4 + [8] * 4 + [12] * 10  # starts 18, 14, 10 run 18, 14, 10 steps


def _batch(device, b=16, epoch=0, max_epoch=10, items=None):
    """A batch on device whose candidate k is row k of `items` (the item table, already on device)."""
    items = torch.randn(b, 8).to(device) if items is None else items
    ids = [torch.arange(b, device=device) for _ in range(3)]  # users, positives, candidates: three tensors
    return TrainBatch(ids[0], ids[1], ids[2].unsqueeze(1), epoch, max_epoch, torch.randn(b, 8).to(device), items)


def _leaf(device, *shape):
    """torch.randn(*shape, requires_grad=True), on device (the same draw on the CPU)."""
    return torch.randn(*shape).to(device).requires_grad_(True)


def test_synthetic_negative_carries_no_gradient_random_negative_does(device):
    s = _sampler(device)
    user = _leaf(device, 16, 8)
    pos = _leaf(device, 16, 8)
    cand = _leaf(device, 16, 8)
    out = s.negatives(_batch(device, epoch=9, items=cand), user, pos)
    out.neg_emb.sum().backward()
    assert pos.grad is None and user.grad is None  # the synthetic part is detached
    assert cand.grad is not None and cand.grad.abs().sum() > 0
    weight, diff = out.losses["diffusion"]
    assert weight == 1e-6 and diff.requires_grad  # the diffusion loss does reach the positive
    assert set(out.diagnostics) >= {"diff_mse", "causal_kl", "mix_ratio", "score_synth", "score_pos",
                                    "score_rand", "win_s10", "win_s14", "win_s18"}
    assert sum(out.diagnostics[f"win_s{k}"].item() for k in (10, 14, 18)) == pytest.approx(1.0)


def test_curriculum_moves_from_random_to_synthetic(device):
    s = _sampler(device)
    user, pos = torch.randn(4000, 8).to(device), torch.randn(4000, 8).to(device)
    b = _batch(device, 4000, epoch=0)
    early = s.negatives(b, user, pos).diagnostics["mix_ratio"].item()
    b.epoch = 8
    late = s.negatives(b, user, pos).diagnostics["mix_ratio"].item()
    assert early == pytest.approx(0.1, abs=0.02)  # Beta(1, 9)
    assert late == pytest.approx(7.4 / 10, abs=0.02)  # Beta(7.4, 2.6) at progress 0.8


def test_hardest_candidate_is_chosen_by_user_score(device):
    s = _sampler(device)
    user = torch.randn(32, 8).to(device)
    cands = torch.randn(3, 32, 8).to(device)
    s.generate = lambda pos, u: cands  # type: ignore[method-assign]
    out = s.negatives(_batch(device, 32, epoch=10, max_epoch=10, items=torch.zeros(32, 8, device=device)), user,
                      torch.randn(32, 8).to(device))
    best = cands[torch.einsum("bd,cbd->cb", user, cands).argmax(0), torch.arange(32, device=device)]
    ratio = out.diagnostics["mix_ratio"].item()
    assert ratio > 0.5
    assert (out.diagnostics["score_synth"].item() == pytest.approx((user * best).sum(-1).mean().item(), rel=1e-5))


def test_presets_and_single_switches(device):
    official, paper = CNSDiffParams(), CNSDiffParams(preset="paper")
    assert (official.train_denoiser, official.user_condition, official.denoise_from_start,
            official.dropout_at_generation, official.selection) == (False, False, False, True, "test_all4")
    assert (paper.train_denoiser, paper.user_condition, paper.denoise_from_start,
            paper.dropout_at_generation, paper.selection) == (True, True, True, False, "valid")
    mixed = CNSDiffParams(preset="official", train_denoiser=True)
    assert mixed.train_denoiser and not mixed.user_condition
    assert CNSDiffParams().start_steps() == [10, 14, 18]
    with pytest.raises(ValueError, match="preset"):
        CNSDiffParams(preset="best")
    with pytest.raises(ValueError, match="sample_start"):
        CNSDiffParams(num_steps=30)
    s = _sampler(device, preset="paper")
    assert s.param_groups() and s.param_groups()[0]["lr"] == 0.01
    assert _sampler(device).param_groups() == []
    assert not any(p.requires_grad for p in _sampler(device).denoiser.parameters())


@pytest.mark.parametrize("bound", [None, 2.0])
def test_shared_logsumexp_matches_autograd(bound):
    torch.manual_seed(0)
    a = F.normalize(torch.randn(7, 5, dtype=torch.float64), dim=-1).requires_grad_(True)
    n = F.normalize(torch.randn(9, 5, dtype=torch.float64), dim=-1).requires_grad_(True)
    w = torch.randn(7, dtype=torch.float64)
    a2, n2 = a.detach().clone().requires_grad_(True), n.detach().clone().requires_grad_(True)
    out = shared_logsumexp(a * 2, n, Workspace().get((7, 9), a), bound)
    (out * w).sum().backward()
    ref = torch.logsumexp((a2 * 2) @ n2.T, dim=1)
    (ref * w).sum().backward()
    torch.testing.assert_close(out, ref)
    torch.testing.assert_close(a.grad, a2.grad)
    torch.testing.assert_close(n.grad, n2.grad)


def _lse_grads(rows: int, negatives: int, dim: int, frozen: int, dtype=torch.float32):
    """Output and gradients of a weighted sum of shared_logsumexp over `rows` anchors and `negatives` rows."""
    torch.manual_seed(rows + negatives + dim)
    a = F.normalize(torch.randn(rows, dim, dtype=dtype), dim=-1).requires_grad_(True)  # CPU: MKL's bits
    n = F.normalize(torch.randn(negatives, dim, dtype=dtype), dim=-1).requires_grad_(True)
    out = shared_logsumexp(a / 0.2, n, Workspace().get((rows, negatives), a), 5.0, frozen=frozen)
    (out * torch.randn(rows, dtype=dtype)).sum().backward()
    return out.detach(), a.grad, n.grad


@pytest.mark.parametrize("rows,negatives,frozen,dim", [
    (2048, 4096, 2048, 64), (1090, 2180, 1090, 64), (300, 600, 300, 16), (37, 74, 37, 64), (40, 56, 40, 128),
    (300, 316, 300, 32), (300, 315, 300, 64), (129, 258, 129, 7), (5, 10, 5, 64), (3, 6, 3, 64), (300, 600, 300, 64)])
def test_frozen_rows_change_no_bit_of_the_other_gradients(rows, negatives, frozen, dim):
    """The gradient of n's rows after the frozen ones, taken apart (CNSDiff's contrastive term) or over all rows
    where splits_frozen_grad says no, has the bits of the product over all rows; the frozen rows get 0. CPU at one
    thread: the property of MKL's products the rule relies on, checked on this machine."""
    out_all, ga_all, gn_all = _lse_grads(rows, negatives, dim, 0)
    out_fz, ga_fz, gn_fz = _lse_grads(rows, negatives, dim, frozen)
    assert torch.equal(out_all, out_fz) and torch.equal(ga_all, ga_fz)
    assert torch.equal(gn_fz[frozen:], gn_all[frozen:])
    assert torch.equal(gn_fz[:frozen], torch.zeros(frozen, dim)) and gn_all[:frozen].abs().sum() > 0


def test_frozen_rows_in_float64_and_all_rows_frozen():
    """float64 (whose products MKL splits otherwise) takes the product over all rows: the same bits; with every
    row frozen n's gradient is all zeros."""
    out_all, ga_all, gn_all = _lse_grads(301, 602, 64, 0, torch.float64)
    out_fz, ga_fz, gn_fz = _lse_grads(301, 602, 64, 301, torch.float64)
    assert torch.equal(ga_all, ga_fz) and torch.equal(gn_fz[301:], gn_all[301:]) and not gn_fz[:301].any()
    _, ga_none, gn_none = _lse_grads(300, 600, 64, 600)
    assert torch.equal(ga_none, _lse_grads(300, 600, 64, 0)[1]) and not gn_none.any()


def test_which_shapes_take_the_frozen_gradient_apart():
    """CNSDiff's contrastive negatives at batch 2048, d 64, float32: the product for the random half alone; under 16
    rows (MKL computes 1-3 rows, and with two threads 5-11, another way), a dim that is not a multiple of 16 or
    float64 take the product over all rows."""
    assert splits_frozen_grad(2048, 64, torch.float32) and splits_frozen_grad(16, 16, torch.float32)
    assert not splits_frozen_grad(15, 64, torch.float32) and not splits_frozen_grad(2048, 7, torch.float32)
    assert not splits_frozen_grad(2048, 64, torch.float64)


def test_frozen_rows_out_of_range_are_refused():
    a, n = torch.randn(3, 4), torch.randn(5, 4)
    for frozen in (-1, 6):
        with pytest.raises(ValueError, match=r"frozen must be in \[0, 5\]"):
            shared_logsumexp(a, n, frozen=frozen)


def test_contrastive_freezes_the_synthetic_half_and_keeps_every_other_gradient(monkeypatch):
    """CNSDiff freezes the synthetic half of its contrastive negatives (no gradient from the chains): the gradients
    of the positive and random embeddings are the same bits as with that half trainable (the ablation's case, where
    nothing is frozen and the half gets its gradient). CPU: bits."""
    import module.samplers.cnsdiff as cnsdiff_module
    s = CNSDiffSampler(CNSDiffParams(), 10, 10, 64, torch.device("cpu"))  # CPU: bit-for-bit gradients
    seen = []
    monkeypatch.setattr(cnsdiff_module, "shared_logsumexp",
                        lambda *args, **kw: seen.append(kw["frozen"]) or shared_logsumexp(*args, **kw))
    torch.manual_seed(3)
    pos0, hard0, rand0 = torch.randn(300, 64), torch.randn(300, 64), torch.randn(300, 64)
    grads = []
    for hard_trainable in (False, True):
        pos, rand = pos0.clone().requires_grad_(True), rand0.clone().requires_grad_(True)
        hard = hard0.clone().requires_grad_(hard_trainable)
        torch.manual_seed(4)  # the positive's noise
        s.contrastive(pos, hard, rand).backward()
        grads.append((pos.grad, rand.grad))
    assert seen == [300, 0]
    assert torch.equal(grads[0][0], grads[1][0]) and torch.equal(grads[0][1], grads[1][1])
    assert hard.grad is not None and hard.grad.abs().sum() > 0


def test_reused_workspace_is_detected_before_backward():
    ws = Workspace()
    a = torch.randn(3, 4, requires_grad=True)
    n = torch.randn(5, 4)
    first = shared_logsumexp(a, n, ws.get((3, 5), a))
    shared_logsumexp(a, n, ws.get((3, 5), a))  # overwrites the buffer the first call saved
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        first.sum().backward()


def test_ablation_switches_random_source_and_fixed_curriculum(device):
    s = CNSDiffSampler(CNSDiffParams(negative_source="random", curriculum="fixed", fixed_ratio=0.3), 4, 16, 8,
                       device).to(device)

    def never(*args, **kwargs):
        raise AssertionError("the synthetic candidates must not be generated")
    s.generate = never  # type: ignore[method-assign]
    items = _leaf(device, 16, 8)
    b = _batch(device, 16, epoch=5, items=items)
    user, pos = torch.randn(16, 8).to(device), torch.randn(16, 8).to(device)
    out = s.negatives(b, user, pos)
    assert torch.allclose(out.neg_emb, items[b.cands[:, 0]])  # RNS's negative
    assert out.diagnostics["mix_ratio"].item() == pytest.approx(0.3)
    assert not any(k.startswith("win_s") for k in out.diagnostics) and "cl" in out.losses
    out.neg_emb.sum().backward()
    assert items.grad.abs().sum() > 0
    fixed = CNSDiffSampler(CNSDiffParams(curriculum="fixed", fixed_ratio=0.8), 4, 16, 8, device).to(device)
    out = fixed.negatives(_batch(device, 16, epoch=0), user, pos)
    assert out.diagnostics["mix_ratio"].item() == pytest.approx(0.8)
    assert {"dist_s10", "dist_s14", "dist_s18"} <= set(out.diagnostics)
    with pytest.raises(ValueError, match="negative_source"):
        CNSDiffParams(negative_source="magic")
