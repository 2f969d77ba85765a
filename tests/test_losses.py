"""The loss family (loss.name): each loss against a direct computation (values and gradients), the special cases
its paper names, the three scoring paths, AdvInfoNCE's alternating epochs, composition with samplers, the switch
leaving BPR as it was, the IR-Benchmark protocol keys, and a run of each loss through main.py on coat."""
from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest
import torch

from bench.grid import comparable, record_differences
from conf.config import load_config
from conf.params import AdvInfoNCEParams, BSLParams, PSLParams, SoftmaxParams
from main import main
from module.losses import LOSSES, get_loss_class
from module.losses.base import row_cosines
from module.losses.psl import log_activation
from module.samplers.base import NegativeOutput, TrainBatch
from tests.conftest import REPO
from util.loss import bpr_loss
from util.typing_coerce import ConfigError

B, N, I, D = 5, 7, 11, 4


def _batch(seed: int = 0):
    """Leaf tensors (user rows, positive rows, item table) and negative ids of a small constructed batch."""
    g = torch.Generator().manual_seed(seed)
    user = torch.randn(B, D, generator=g, dtype=torch.float64).float().requires_grad_()
    pos = torch.randn(B, D, generator=g, dtype=torch.float64).float().requires_grad_()
    table = torch.randn(I, D, generator=g, dtype=torch.float64).float().requires_grad_()
    ids = torch.randint(0, I, (B, N), generator=g)
    return user, pos, table, ids


def _train_batch(ids: torch.Tensor, table: torch.Tensor) -> TrainBatch:
    users = torch.arange(B)
    return TrainBatch(users, torch.zeros(B, dtype=torch.long), ids, 0, 10, torch.zeros(B, D), table)


def _half_cos(a: list[float], b: list[float]) -> float:
    """cos(a, b) / 2 in plain Python."""
    dot = sum(x * y for x, y in zip(a, b))
    return dot / math.sqrt(sum(x * x for x in a)) / math.sqrt(sum(y * y for y in b)) / 2


def _naive(name: str, params, user, pos, table, ids, adv=None) -> float:
    """The loss computed row by row with Python floats, as each paper writes it."""
    u, p, t, ids = user.tolist(), pos.tolist(), table.tolist(), ids.tolist()
    total = 0.0
    for b in range(B):
        fi = _half_cos(u[b], p[b])
        fj = [_half_cos(u[b], t[j]) for j in ids[b]]
        if name == "softmax":
            total += math.log(sum(math.exp((f - fi) / params.tau) for f in fj))
        elif name == "bsl":
            total += -math.log(math.exp(fi / params.tau1)
                               / sum(math.exp(f / params.tau2) for f in fj) ** (params.tau2 / params.tau1))
        elif name == "psl":
            sigma = {"tanh": lambda d: math.tanh(d) + 1, "atan": lambda d: math.atan(d) + 1,
                     "relu": lambda d: max(d + 1, 0.0), "exp": math.exp}[params.activation]
            total += math.log(sum(sigma(f - fi) ** (1 / params.tau) for f in fj))
        elif name == "advinfonce":
            adv_user, adv_item = adv
            hard = [2 * _half_cos(adv_user[b], adv_item[j]) for j in ids[b]]
            w = [N * math.exp(h) / sum(math.exp(x) for x in hard) for h in hard]
            si, sj = fi / params.tau, [f / params.tau for f in fj]
            total += -math.log(math.exp(si) / (math.exp(si) + params.neg_weight * sum(
                wj * math.exp(s) for wj, s in zip(w, sj))))
    return total / B


PARAMS = {
    "softmax": SoftmaxParams(tau=0.2),
    "bsl": BSLParams(tau1=0.3, tau2=0.2),
    "psl-tanh": PSLParams(activation="tanh", tau=0.2),
    "psl-atan": PSLParams(activation="atan", tau=0.2),
    "psl-relu": PSLParams(activation="relu", tau=0.2),
    "psl-exp": PSLParams(activation="exp", tau=0.2),
    "advinfonce": AdvInfoNCEParams(tau=0.2, neg_weight=3.0),
}


@pytest.mark.parametrize("case", list(PARAMS))
@pytest.mark.parametrize("path", ["kernel", "product", "gather"])
def test_loss_matches_direct_computation_and_its_gradient(case, path, monkeypatch):
    name = case.split("-")[0]
    params = PARAMS[case]
    loss = get_loss_class(name)(params, B, I, torch.device("cpu"))
    real = row_cosines
    monkeypatch.setattr("module.losses.base.row_cosines", lambda q, t, i, p="auto": real(q, t, i, path))
    user, pos, table, ids = _batch()
    adv = None
    if name == "advinfonce":
        loss.trains_model(params.adv_every - 1)  # an adversary epoch: the hardness takes gradient
        adv = (loss.adv_user.tolist(), loss.adv_item.tolist())
    out = NegativeOutput(None, ids, ids, table=table)
    value = loss(_train_batch(ids, table), user, pos, out)
    assert value.item() == pytest.approx(_naive(name, params, user, pos, table, ids, adv), rel=1e-5)
    value.backward()
    # the gradient against central differences of the direct computation (float64 steps on a few coordinates)
    eps = 1e-3
    for tensor, index in [(user, (1, 2)), (pos, (3, 0)), (table, (int(ids[0, 0]), 1))]:
        with torch.no_grad():
            saved = tensor[index].item()
            tensor[index] = saved + eps
            up = _naive(name, params, user, pos, table, ids, adv)
            tensor[index] = saved - eps
            down = _naive(name, params, user, pos, table, ids, adv)
            tensor[index] = saved
        assert tensor.grad[index].item() == pytest.approx((up - down) / (2 * eps), rel=2e-2, abs=1e-4)
    if name == "advinfonce":  # the adversary's gradient flows in its epochs
        assert loss.adv_item.grad is not None and loss.adv_item.grad.abs().sum() > 0


def test_special_cases_the_papers_name():
    """PSL with sigma = exp is SL (the PSL paper, section 4); BSL with tau1 = tau2 is SL (the BSL paper)."""
    user, pos, table, ids = _batch(1)
    out = NegativeOutput(None, ids, ids, table=table)
    batch = _train_batch(ids, table)
    cpu = torch.device("cpu")
    sl = get_loss_class("softmax")(SoftmaxParams(tau=0.1), B, I, cpu)(batch, user, pos, out)
    psl = get_loss_class("psl")(PSLParams(activation="exp", tau=0.1), B, I, cpu)(batch, user, pos, out)
    bsl = get_loss_class("bsl")(BSLParams(tau1=0.1, tau2=0.1), B, I, cpu)(batch, user, pos, out)
    assert psl.item() == pytest.approx(sl.item(), rel=1e-6) and bsl.item() == pytest.approx(sl.item(), rel=1e-6)
    # relu(d + 1) <= exp(d) on the gap's range [-1, 1] (1 + d <= e^d), and every surrogate is 1 at d = 0, as exp
    d = torch.linspace(-1, 1, 101)
    assert torch.all(log_activation(d, "relu") <= d + 1e-6)
    for act in ("tanh", "atan", "relu"):
        assert log_activation(torch.zeros(1), act).item() == pytest.approx(0.0, abs=1e-7)
    assert torch.isfinite(log_activation(torch.tensor([-1.0]), "relu")).all()  # finite at the one zero of relu


def test_three_scoring_paths_agree():
    user, _, table, ids = _batch(2)
    grads = {}
    for path in ("kernel", "product", "gather"):
        q, t = user.detach().clone().requires_grad_(), table.detach().clone().requires_grad_()
        scores = row_cosines(q, t, ids, path)
        (scores * torch.arange(N).float()).sum().backward()
        grads[path] = (scores.detach(), q.grad, t.grad)
    for path in ("product", "gather"):
        for a, b in zip(grads["kernel"], grads[path]):
            assert torch.allclose(a, b, atol=1e-6), path


def test_bpr_through_the_loss_switch_is_bpr_bit_for_bit():
    """The switch's BPR on a real-items output is util.loss.bpr_loss on the gathered rows: value and gradient."""
    user, pos, table, ids = _batch(3)
    bpr = get_loss_class("bpr")(None, B, I, torch.device("cpu"))
    value = bpr(_train_batch(ids, table), user, pos, NegativeOutput(None, ids, ids, table=table))
    value.backward()
    grads = [t.grad.clone() for t in (user, pos, table)]
    for t in (user, pos, table):
        t.grad = None
    direct = bpr_loss(user, pos, table[ids])
    direct.backward()
    assert torch.equal(value, direct)
    assert all(torch.equal(g, t.grad) for g, t in zip(grads, (user, pos, table)))
    assert bpr.weight(NegativeOutput(None, ids, ids, table=table, bpr_weight=2.0)) == 2.0
    assert get_loss_class("softmax")(SoftmaxParams(), B, I, torch.device("cpu")).weight(
        NegativeOutput(None, ids, ids, table=table, bpr_weight=2.0)) == 1.0  # DNS(M,N)'s sum is BPR's


def test_advinfonce_alternates_model_and_adversary_epochs():
    loss = get_loss_class("advinfonce")(AdvInfoNCEParams(adv_every=3), B, I, torch.device("cpu"))
    assert [loss.trains_model(e) for e in range(7)] == [True, True, False, True, True, False, True]
    loss.trains_model(0)
    user, pos, table, ids = _batch(4)
    loss(_train_batch(ids, table), user, pos, NegativeOutput(None, ids, ids, table=table)).backward()
    assert loss.adv_user.grad is None and loss.adv_item.grad is None  # model epochs leave the adversary alone
    opt = loss.make_optimizer(0.0)
    assert opt.defaults["maximize"] and opt.defaults["lr"] == 5e-5
    with pytest.raises(ValueError, match="adv_every"):
        AdvInfoNCEParams(adv_every=1)


def _run(tmp_path, shared, *overrides):
    args = ["-c", str(REPO / "conf" / "LightGCN.yaml"), "--set", f"output={tmp_path / 'results'}",
            "--set", f"log.dir={tmp_path / 'log'}", "--set", "device=cpu", "--set", "dataset=coat",
            "--set", f"dataset.root={shared}", "--set", "negative.sampler=rns", "--set", "fhn.probe=0"]
    for o in overrides:
        args += ["--set", o]
    status = main(args)
    runs = sorted((tmp_path / "results").iterdir()) if (tmp_path / "results").exists() else []
    return status, runs


@pytest.mark.parametrize("loss", ["softmax", "bsl", "psl", "advinfonce"])
def test_each_loss_runs_through_main_on_coat(tmp_path, shared, loss):
    status, runs = _run(tmp_path, shared, f"loss.name={loss}", "max.epoch=2", "params.rns.n_negs=16",
                        "params.advinfonce.adv_every=2")
    assert status == 0 and len(runs) == 1
    rows = list(csv.DictReader((runs[0] / "epochs.csv").open()))
    assert len(rows) == 2 and loss in rows[0] and "bpr" not in rows[0]
    assert all(math.isfinite(float(r[loss])) for r in rows)
    config = json.loads((runs[0] / "config.json").read_text())
    assert config["loss.name"] == loss and loss in config["params"]
    metrics = json.loads((runs[0] / "metrics.json").read_text())
    assert metrics["metrics"]["test_ood"]["Recall@20"] > 0
    if loss == "advinfonce":  # epoch 2 trained only the adversary: the model, and so its metrics, stayed
        assert rows[1]["test_ood/Recall@20"] == rows[0]["test_ood/Recall@20"]


def test_loss_refuses_a_sampler_that_synthesises(tmp_path, shared, caplog):
    status, _ = _run(tmp_path, shared, "loss.name=softmax", "negative.sampler=cnsdiff", "max.epoch=1")
    assert status == 2
    assert "loss.name: softmax trains on real negative items" in caplog.text and "rns, pns, dns" in caplog.text


@pytest.mark.parametrize("override, message", [
    ("loss.name=softmx", "loss.name"),
    ("params.softmax.tau=0", "params.softmax: tau must be > 0"),
    ("params.psl.activation=sigmoid", "params.psl: activation must be one of"),
    ("params.bsl.tau3=1", "unknown config key 'params.bsl.tau3'"),
    ("embedding.init=uniform", "embedding.init"),
    ("eval.users=some", "eval.users"),
])
def test_bad_loss_settings_are_clear_errors(override, message):
    with pytest.raises(ConfigError, match=message.replace(".", r"\.")):
        load_config(None, ["dataset=coat", override, "loss.name=psl" if "psl" in override else "seed=1"])


def test_loss_settings_are_recorded_and_compared():
    base = ["dataset=coat", "loss.name=softmax"]
    a = load_config(None, base).to_dict()
    b = load_config(None, base + ["params.softmax.tau=0.1"]).to_dict()
    assert a["params"]["softmax"] == {"tau": 0.05} and b["params"]["softmax"] == {"tau": 0.1}
    assert comparable(a)["params.softmax.tau"] == 0.05 and comparable(a) != comparable(b)
    bpr = load_config(None, ["dataset=coat"]).to_dict()
    assert bpr["loss.name"] == "bpr" and set(bpr["params"]) == {"rns"}  # BPR records no loss section
    # a BPR record from before the switch (no loss keys) is the same run as BPR today
    old = {k: v for k, v in bpr.items() if k not in ("loss.name", "embedding.init", "eval.users")}
    assert record_differences(old, bpr, {}) == []


def test_eval_users_all_averages_over_every_user(tmp_path, shared):
    _, runs = _run(tmp_path / "a", shared, "max.epoch=1")
    _, runs_all = _run(tmp_path / "b", shared, "max.epoch=1", "eval.users=all")
    test = json.loads((runs[0] / "metrics.json").read_text())["metrics"]["test_ood"]
    every = json.loads((runs_all[0] / "metrics.json").read_text())["metrics"]["test_ood"]
    n_users = 1 + max(int(line.split()[0]) for line in open(shared / "coat" / "train.txt"))  # adjacency lists
    with_test = 224  # coat's test_ood users with an item not in training (the run's log: "test_ood users 224")
    assert with_test < n_users == 290
    for key in ("Recall@20", "NDCG@20", "Precision@20"):
        assert every[key] == pytest.approx(test[key] * with_test / n_users, rel=1e-9)
    assert every["Hit Ratio@20"] == pytest.approx(test["Hit Ratio@20"], rel=1e-12)


def test_embedding_init_normal_is_standard_normal():
    from model.graph.LightGCN import LGCNEncoder
    torch.manual_seed(0)
    normal = LGCNEncoder(500, 400, 64, 0, None, "normal")
    xavier = LGCNEncoder(500, 400, 64, 0, None)
    assert abs(normal.item_emb.std().item() - 1.0) < 0.02 and abs(normal.user_emb.mean().item()) < 0.02
    assert xavier.item_emb.std().item() < 0.1


def test_registry_matches_params():
    from conf.params import LOSS_PARAMS
    assert list(LOSSES) == ["bpr", *LOSS_PARAMS]
    assert all(LOSSES[name].Params is cls for name, cls in LOSS_PARAMS.items())
    assert not LOSSES["bpr"].cosine and all(LOSSES[n].cosine for n in LOSS_PARAMS)


def test_advinfonce_resumes_bit_for_bit(tmp_path, shared):
    """The adversary and its optimiser are in the checkpoint: halted after epoch 2 and resumed, the run is the
    uninterrupted one (epoch 2 trains the adversary, epoch 3 the model again)."""
    keys = ["loss.name=advinfonce", "max.epoch=3", "params.rns.n_negs=8", "params.advinfonce.adv_every=2",
            "params.advinfonce.adv_lr=0.05"]
    status, whole = _run(tmp_path / "whole", shared, *keys)
    assert status == 0
    status, halted = _run(tmp_path / "parts", shared, *keys, "early_stop.halt_after=2")
    assert status == 0
    assert main(["--resume", str(halted[0]), "--set", "early_stop.halt_after=0"]) == 0

    def rows(run):
        return [{k: v for k, v in r.items() if not k.endswith("_s")} for r in csv.DictReader((run / "epochs.csv").open())]
    assert len(rows(whole[0])) == 3 and rows(halted[0]) == rows(whole[0])
