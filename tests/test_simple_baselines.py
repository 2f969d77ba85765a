"""MostPop, ItemKNN and EASE: against direct computations, and through main.py like every model."""
from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest
import scipy.sparse as sp

from model.simple.EASE import ease_weights
from model.simple.ItemKNN import knn_similarity
from tests.test_end_to_end import _run


def _matrix(seed=0, users=12, items=7, density=0.4):
    rng = np.random.default_rng(seed)
    dense = (rng.random((users, items)) < density).astype(np.float64)
    dense[0, :] = 1  # every item has a user
    return sp.csr_matrix(dense), dense


@pytest.mark.parametrize("lam", [0.5, 10.0])
def test_ease_equals_a_direct_ridge_solve_per_column(lam):
    x, dense = _matrix()
    b = ease_weights(x, lam)
    for j in range(dense.shape[1]):  # diag(B) = 0: column j is a ridge regression of x_j on the other columns
        others = [i for i in range(dense.shape[1]) if i != j]
        a = dense[:, others]
        coef = np.linalg.solve(a.T @ a + lam * np.eye(len(others)), a.T @ dense[:, j])
        np.testing.assert_allclose(b[others, j], coef, rtol=1e-8, atol=1e-10)
        assert b[j, j] == 0.0


@pytest.mark.parametrize("k,shrink", [(2, 0.0), (3, 5.0), (10, 1.0)])
def test_itemknn_equals_a_naive_per_pair_computation(k, shrink):
    x, dense = _matrix(seed=3)
    sim = knn_similarity(x, k, shrink)
    n = dense.shape[1]
    naive = np.zeros((n, n))
    for i in range(n):
        for j in range(n):
            if i != j:
                dot = float(dense[:, i] @ dense[:, j])
                naive[i, j] = dot / (math.sqrt(dense[:, i].sum()) * math.sqrt(dense[:, j].sum()) + shrink)
    for j in range(n):  # keep j's k most similar items
        order = sorted(range(n), key=lambda i: -naive[i, j])
        for i in order[k:]:
            naive[i, j] = 0.0
    kept = (sim != 0).sum(axis=0)
    assert (kept <= min(k, n)).all()
    for j in range(n):  # ties at the k-th value may keep either item: compare the kept values and the rest
        np.testing.assert_allclose(np.sort(sim[:, j])[::-1][:k], np.sort(naive[:, j])[::-1][:k], rtol=1e-6)
        np.testing.assert_allclose(sim[:, j][sim[:, j] > 0], naive[:, j][sim[:, j] > 0], rtol=1e-6)


def _topk_file(run, name):
    lines = (run / name).read_text().splitlines()[1:]
    return {line.split(":")[0]: [pair.split(",")[0].strip("(") for pair in line.split(": ")[1].split()] for line in lines}


@pytest.mark.parametrize("model", ["MostPop", "ItemKNN", "EASE"])
def test_each_runs_through_main_and_writes_the_usual_files(shared, tmp_path, model):
    status, runs = _run(tmp_path, "dataset=coat", f"dataset.root={shared}", f"model.name={model}")
    assert status == 0 and len(runs) == 1
    run = runs[0]
    assert run.name.startswith(f"{model}-coat-s2025-")
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["model"] == model and metrics["selection"]["rule"] == "valid"
    assert metrics["sampler"]["model"] == model and 0 < metrics["metrics"]["test_ood"]["Recall@20"] < 1
    rows = list(csv.DictReader((run / "epochs.csv").open()))
    assert len(rows) == 1 and float(rows[0]["valid/Recall@20"]) > 0
    recs = _topk_file(run, f"{model}@fit-test_ood-top-20items.txt")
    assert recs and all(len(v) == 20 for v in recs.values())
    config = json.loads((run / "config.json").read_text())
    assert config["model.name"] == model


def test_mostpop_ranks_each_users_unseen_items_by_training_degree(shared, tmp_path):
    status, runs = _run(tmp_path, "dataset=coat", f"dataset.root={shared}", "model.name=MostPop",
                        "eval.mask=train")
    assert status == 0
    from data.loader import read_interactions
    train = read_interactions(shared / "coat" / "train.txt", "adjacency")
    degree: dict[str, int] = {}
    seen: dict[str, set[str]] = {}
    for u, i in zip(train.users, train.items):
        degree[i] = degree.get(i, 0) + 1
        seen.setdefault(u, set()).add(i)
    recs = _topk_file(runs[0], "MostPop@fit-test_ood-top-20items.txt")
    for user, items in recs.items():
        assert not set(items) & seen.get(user, set())  # training items are masked
        degrees = [degree[i] for i in items]
        assert degrees == sorted(degrees, reverse=True)
        unseen = sorted((d for i, d in degree.items() if i not in seen.get(user, set())), reverse=True)
        assert degrees == unseen[:20]  # the 20 most popular unseen items, whatever the ties


def test_bad_simple_baseline_settings_are_clear_errors(tmp_path, caplog):
    status, _ = _run(tmp_path, "model.name=ItemKNN", "ItemKNN.k=0")
    assert status == 2 and "ItemKNN.k: 0 is below the minimum 1" in caplog.text
    status, _ = _run(tmp_path, "model.name=EASE", "EASE.lambda=-1")
    assert status == 2 and "EASE.lambda: -1.0 is below the minimum 0.0" in caplog.text
    status, runs = _run(tmp_path, "model.name=EASE", "EASE.lambda=0")
    assert status == 2 and "EASE.lambda: must be > 0" in caplog.text
    assert runs == []  # refused from the configuration, before a run folder is made
