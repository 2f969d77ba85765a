"""util.sparse's CSR product: bit for bit torch.sparse.mm's result (what every CPU number was made with), at any
thread count, in LightGCN's propagation and its gradient; bad input refused; bench.bench_spmm writes its timings."""
from __future__ import annotations

import json

import numba
import numpy as np
import pytest
import scipy.sparse as sp
import torch

import base.torch_interface as TI
import util.device
from base.torch_interface import sparse_mm, symmetric_spmm, to_torch_csr
from bench import bench_spmm
from util.sparse import csr_matmul


def _csr(rows, cols, density, seed):
    """A random float32 CSR matrix with sorted indices, some rows empty, entries of both signs and magnitudes."""
    rng = np.random.default_rng(seed)
    mat = sp.random(rows, cols, density=density, format="csr", dtype=np.float32, random_state=rng)
    mat.data = (mat.data - 0.5) * rng.choice([1e-3, 1.0, 1e3], size=mat.nnz).astype(np.float32)
    keep = np.ones(rows, np.float32)
    keep[rng.choice(rows, size=max(1, rows // 5), replace=False)] = 0.0  # empty rows
    mat = (sp.diags(keep) @ mat).tocsr()
    mat.eliminate_zeros()
    mat.sort_indices()
    return mat


@pytest.fixture
def kernel_calls(monkeypatch):
    """A list that grows by one at every call of the kernel through base.torch_interface."""
    calls = []
    monkeypatch.setattr(TI, "csr_matmul", lambda *a, **k: calls.append(1) or csr_matmul(*a, **k))
    return calls


def _arrays(mat):
    return mat.indptr.astype(np.int64), mat.indices.astype(np.int64), mat.data


@pytest.mark.parametrize("rows,cols,d,density,seed", [(300, 200, 64, 0.05, 0), (1000, 700, 7, 0.01, 1),
                                                     (257, 513, 1, 0.2, 2), (40, 40, 64, 0.9, 3)])
def test_the_kernel_is_torch_sparse_mm_bit_for_bit(rows, cols, d, density, seed):
    mat = _csr(rows, cols, density, seed)
    x = np.random.default_rng(seed + 10).standard_normal((cols, d)).astype(np.float32)
    x[::7] *= -0.0  # signed zeros too
    expected = torch.sparse.mm(to_torch_csr(mat, torch.device("cpu")), torch.from_numpy(x)).numpy()
    got = csr_matmul(*_arrays(mat), x)
    assert got.tobytes() == expected.tobytes()
    assert got.tobytes() != np.zeros_like(got).tobytes()  # not trivially equal
    np.testing.assert_allclose(got, mat.astype(np.float64) @ x.astype(np.float64), rtol=1e-4, atol=1e-3)


@pytest.mark.skipif(numba.config.NUMBA_NUM_THREADS < 2, reason="numba has one thread here: nothing to compare")
def test_the_kernel_does_not_depend_on_the_thread_count():
    mat = _csr(2000, 1500, 0.02, 4)  # several blocks of rows
    x = np.random.default_rng(5).standard_normal((1500, 64)).astype(np.float32)
    before = numba.get_num_threads()
    try:
        outs = []
        for n in (1, 2):
            numba.set_num_threads(n)
            outs.append(csr_matmul(*_arrays(mat), x).tobytes())
    finally:
        numba.set_num_threads(before)
    assert outs[0] == outs[1]


def test_torch_with_two_threads_gives_the_same_bits():
    mat = _csr(2000, 1500, 0.02, 11)
    x = torch.randn(1500, 32)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        expected = torch.sparse.mm(to_torch_csr(mat, torch.device("cpu")), x).numpy().tobytes()
    finally:
        torch.set_num_threads(before)
    assert csr_matmul(*_arrays(mat), x.numpy()).tobytes() == expected


def test_int32_indices_and_a_strided_x_give_the_same_bits():
    mat = _csr(300, 400, 0.05, 12)
    wide = np.random.default_rng(13).standard_normal((400, 40)).astype(np.float32)
    x = wide[:, ::2]  # not contiguous
    expected = torch.sparse.mm(to_torch_csr(mat, torch.device("cpu")), torch.from_numpy(x.copy())).numpy()
    got = csr_matmul(mat.indptr.astype(np.int32), mat.indices.astype(np.int32), mat.data, x)
    assert got.tobytes() == expected.tobytes()


def test_out_is_filled_and_bad_input_is_refused():
    mat = _csr(50, 30, 0.2, 6)
    x = np.ones((30, 4), np.float32)
    out = np.full((50, 4), np.nan, np.float32)
    assert csr_matmul(*_arrays(mat), x, out) is out and not np.isnan(out).any()
    indptr, indices, data = _arrays(mat)
    with pytest.raises(ValueError, match="float32"):
        csr_matmul(indptr, indices, data, x.astype(np.float64))
    with pytest.raises(ValueError, match=r"column index is outside x's rows \[0, 20\)"):
        csr_matmul(indptr, indices, data, x[:20])
    negative = indices.copy()
    negative[0] = -1
    with pytest.raises(ValueError, match="column index is outside"):
        csr_matmul(indptr, negative, data, x)
    with pytest.raises(ValueError, match="inconsistent CSR arrays"):
        csr_matmul(indptr, indices[:-1], data, x)  # one index fewer than indptr and the values say
    long = indptr.copy()
    long[-1] += 5
    with pytest.raises(ValueError, match="inconsistent CSR arrays"):
        csr_matmul(long, indices, data, x)
    with pytest.raises(ValueError, match="must be integers"):
        csr_matmul(indptr, indices.astype(np.float64), data, x)
    with pytest.raises(ValueError, match=r"out must be a contiguous float32 \(50, 4\) array"):
        csr_matmul(indptr, indices, data, x, np.empty((50, 3), np.float32))
    square = _csr(30, 30, 0.2, 14)
    y = np.ones((30, 4), np.float32)
    with pytest.raises(ValueError, match="out shares memory with x"):
        csr_matmul(*_arrays(square), y, y)


def test_sparse_mm_refuses_a_shape_mismatch_and_an_input_that_needs_a_gradient():
    adj = to_torch_csr(_csr(10, 20, 0.3, 15), torch.device("cpu"))
    with pytest.raises(ValueError, match=r"a \(10, 20\) matrix cannot multiply a \(30, 4\) one"):
        sparse_mm(adj, torch.ones(30, 4))
    with pytest.raises(ValueError, match="use symmetric_spmm"):
        sparse_mm(adj, torch.ones(20, 4, requires_grad=True))
    with torch.no_grad():
        assert sparse_mm(adj, torch.ones(20, 4, requires_grad=True)).shape == (10, 4)


def test_the_cpu_takes_the_kernel_and_a_forced_device_path_torch_with_the_same_bits(monkeypatch, kernel_calls):
    mat = _csr(120, 120, 0.1, 7)
    adj = to_torch_csr(mat + mat.T, torch.device("cpu"))  # symmetric, as LightGCN's adjacency
    x = torch.randn(120, 16)
    host = sparse_mm(adj, x)
    assert kernel_calls == [1]
    monkeypatch.setattr(util.device, "FORCE_DEVICE_PATHS", True)
    forced = sparse_mm(adj, x)
    assert kernel_calls == [1]  # torch.sparse.mm, the path a GPU takes
    assert host.numpy().tobytes() == forced.numpy().tobytes()


@pytest.mark.parametrize("forced", [False, True])
def test_the_propagations_gradient_is_the_same_on_either_path(monkeypatch, kernel_calls, forced):
    mat = _csr(90, 90, 0.1, 8)
    adj = to_torch_csr(mat + mat.T, torch.device("cpu"))
    x = torch.randn(90, 8, requires_grad=True)
    w = torch.randn(90, 8)
    monkeypatch.setattr(util.device, "FORCE_DEVICE_PATHS", forced)
    out = symmetric_spmm(adj, symmetric_spmm(adj, x))
    forward = len(kernel_calls)
    (out * w).sum().backward()
    assert (forward, len(kernel_calls)) == ((0, 0) if forced else (2, 4))  # the backward takes the kernel too
    monkeypatch.setattr(util.device, "FORCE_DEVICE_PATHS", not forced)
    x2 = x.detach().clone().requires_grad_(True)
    (symmetric_spmm(adj, symmetric_spmm(adj, x2)) * w).sum().backward()
    assert x.grad.numpy().tobytes() == x2.grad.numpy().tobytes()


def test_the_bench_times_both_paths_and_writes_them(tmp_path, shared):
    out = tmp_path / "bench"
    assert bench_spmm.main(["--dataset", "coat", "--dataset-root", str(shared), "--repeats", "2", "--batches", "2",
                            "--layers", "2", "--out", str(out)]) == 0
    result = json.loads((out / "spmm-coat-rns-cpu.json").read_text())
    assert result["layers"] == 2 and result["threads"] == 1 and result["nnz"] > 0 and result["epoch_batches"] > 0
    assert result["steps"] == 2
    for part in ("product", "propagation", "epoch"):
        low, high = result[part]["range"]
        assert result[part]["torch_s"] > 0 and result[part]["kernel_s"] > 0
        assert low <= result[part]["kernel_over_torch"] <= high
    assert TI.host_path is util.device.host_path  # the switch is undone


def test_the_benchs_switch_sends_only_the_products_dispatch_to_torch(kernel_calls):
    mat = _csr(60, 60, 0.1, 9)
    adj = to_torch_csr(mat + mat.T, torch.device("cpu"))
    with bench_spmm.products_by_torch(True):
        sparse_mm(adj, torch.randn(60, 4))
        assert util.device.host_path(torch.zeros(1))  # the other CPU paths are untouched
    assert kernel_calls == []
    with bench_spmm.products_by_torch(False):
        sparse_mm(adj, torch.randn(60, 4))
    assert kernel_calls == [1]

