"""LightGCN propagation against a dense reference (values and gradients); the L2 forms; selection rules."""
from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from base.selection import All4Selection, ValidSelection
from base.torch_interface import symmetric_spmm, to_torch_csr
from model.graph.LightGCN import LGCNEncoder
from util.loss import bpr_loss, l2_lightgcn, l2_selfrec


def _random_norm_adj(n_users, n_items, seed=0):
    rng = np.random.default_rng(seed)
    r = (rng.random((n_users, n_items)) < 0.3).astype(np.float64)
    a = np.zeros((n_users + n_items,) * 2)
    a[:n_users, n_users:], a[n_users:, :n_users] = r, r.T
    d = a.sum(1)
    inv = np.where(d > 0, 1 / np.sqrt(np.maximum(d, 1e-12)), 0.0)
    return inv[:, None] * a * inv[None, :]


def test_symmetric_spmm_values_and_gradient(device):
    dense = _random_norm_adj(6, 5)
    adj = to_torch_csr(sp.csr_matrix(dense), device)
    x = torch.randn(11, 4, dtype=torch.float32).to(device).requires_grad_(True)
    w = torch.randn(11, 4).to(device)
    (symmetric_spmm(adj, x) * w).sum().backward()
    x_ref = x.detach().clone().requires_grad_(True)
    ref = torch.from_numpy(dense).float().to(device) @ x_ref
    (ref * w).sum().backward()
    torch.testing.assert_close(symmetric_spmm(adj, x.detach()), ref.detach())
    torch.testing.assert_close(x.grad, x_ref.grad)


def test_encoder_matches_dense_layer_mean_with_gradients(device):
    n_users, n_items, dim, layers = 7, 9, 4, 2
    dense = torch.from_numpy(_random_norm_adj(n_users, n_items, seed=1)).float()
    torch.manual_seed(0)
    enc = LGCNEncoder(n_users, n_items, dim, layers, to_torch_csr(sp.csr_matrix(dense.numpy()), device)).to(device)
    dense = dense.to(device)
    users, items = enc()
    ego = torch.cat([enc.user_emb, enc.item_emb]).detach().clone().requires_grad_(True)
    outs, cur = [ego], ego
    for _ in range(layers):
        cur = dense @ cur
        outs.append(cur)
    ref = torch.stack(outs).mean(0)
    torch.testing.assert_close(torch.cat([users, items]), ref)
    w = torch.randn_like(ref)
    (torch.cat([users, items]) * w).sum().backward()
    (ref * w).sum().backward()
    torch.testing.assert_close(torch.cat([enc.user_emb.grad, enc.item_emb.grad]), ego.grad)


def test_xavier_bounds_per_table(device):
    torch.manual_seed(0)
    enc = LGCNEncoder(100, 10, 64, 1, to_torch_csr(sp.csr_matrix((110, 110), dtype=np.float32), device)).to(device)
    assert enc.user_emb.abs().max() <= np.sqrt(6 / (100 + 64))
    assert enc.item_emb.abs().max() <= np.sqrt(6 / (10 + 64))
    assert enc.user_emb.abs().max() > 0.9 * np.sqrt(6 / (100 + 64))


def test_l2_forms_by_hand():
    u = torch.tensor([[3.0, 4.0], [0.0, 0.0]])  # Frobenius 5, squared 25
    i = torch.tensor([[1.0, 0.0], [0.0, 1.0]])  # Frobenius sqrt2, squared 2
    j = torch.tensor([[0.0, 2.0], [0.0, 0.0]])  # Frobenius 2, squared 4
    assert l2_selfrec(0.1, 4, u, i, j).item() == pytest.approx(0.1 * (5 / 2 + np.sqrt(2) / 2 + 2 / 2) / 4)
    assert l2_lightgcn(0.1, u, i, j).item() == pytest.approx(0.1 * (25 + 2 + 4) / 2 / 2)


def test_bpr_single_and_multiple_negatives():
    u = torch.tensor([[1.0, 0.0]])
    p = torch.tensor([[2.0, 0.0]])
    n = torch.tensor([[1.0, 5.0]])
    assert bpr_loss(u, p, n).item() == pytest.approx(np.log1p(np.exp(-1.0)))
    n2 = torch.tensor([[[1.0, 0.0], [3.0, 0.0]]])
    expected = (np.log1p(np.exp(-1.0)) + np.log1p(np.exp(1.0))) / 2
    assert bpr_loss(u, p, n2).item() == pytest.approx(expected)


def test_valid_selection_with_patience():
    sel = ValidSelection("Recall@20", patience=2)
    results = [0.1, 0.2, 0.2, 0.15]
    flags = [sel.update(e, {"valid": {"Recall@20": r}}) for e, r in enumerate(results)]
    assert flags == [True, True, False, False] and sel.best_epoch == 1 and sel.should_stop()


def test_test_all4_needs_all_four_metrics_not_lower():
    sel = All4Selection("test_ood")

    def m(r10, n10, r20, n20):
        return {"test_ood": {"Recall@10": r10, "NDCG@10": n10, "Recall@20": r20, "NDCG@20": n20}}
    assert sel.update(0, m(0.1, 0.1, 0.2, 0.2))
    assert not sel.update(1, m(0.3, 0.3, 0.3, 0.19))  # one metric lower: rejected
    assert sel.update(2, m(0.1, 0.1, 0.2, 0.2))  # ties accepted
    assert sel.update(3, m(0.1000001, 0.1, 0.2, 0.2)) and sel.best_epoch == 3
    assert not sel.should_stop()
