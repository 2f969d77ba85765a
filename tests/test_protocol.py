"""A protocol's own stop, its reported epoch and the tie-breaks (bench/protocol.py), on constructed curves and
against real runs that stop on one validation file alone."""
from __future__ import annotations

import csv
import json

import pytest

from bench import protocol as P
from tests.test_end_to_end import _run


def _rows(values, ndcg=None, file="valid"):
    ndcg = ndcg or [0.0] * len(values)
    return [{f"{file}/Recall@20": v, f"{file}/NDCG@20": n} for v, n in zip(values, ndcg)]


def test_stop_index_follows_patience_and_min_epochs():
    rows = _rows([0.1, 0.2, 0.2, 0.15, 0.3, 0.1, 0.1, 0.1])
    assert P.stop_index(rows, "valid", patience=2) == 3  # epochs 3 and 4 do not beat 0.2
    assert P.stop_index(rows, "valid", patience=3) == 7  # 0.3 at epoch 5 resets; 6, 7, 8 stall: stops at 8
    assert P.stop_index(rows, "valid", patience=2, min_epochs=6) == 6  # stalled, but not before 6 epochs
    assert P.stop_index(rows, "valid", patience=0) == 7  # never stops
    assert P.stop_index(rows, "valid", patience=9) == 7  # the run ended before the rule


def test_rows_without_an_evaluation_neither_count_nor_stop():
    rows = [{"valid/Recall@20": 0.2}, {}, {"valid/Recall@20": 0.1}, {}, {"valid/Recall@20": 0.1}]
    assert P.stop_index(rows, "valid", patience=2) == 4


def test_the_reported_epoch_breaks_ties_by_ndcg_then_the_earlier_epoch():
    rows = _rows([0.2, 0.3, 0.3, 0.3], ndcg=[0.5, 0.1, 0.2, 0.2])
    assert P.reported_index(rows, "valid") == 2  # Recall tie of epochs 2-4: NDCG picks 3 (and 3 over 4)
    assert P.reported_index(rows, "valid", last=1) == 1  # cut before them
    # values equal only to the 6 digits an old epochs.csv kept are ties too, broken the same way
    old = _rows([float(f"{0.1234564:.6g}"), float(f"{0.1234561:.6g}")], ndcg=[0.01, 0.02])
    assert P.reported_index(old, "valid") == 1
    assert P.reported_index([{"x": 1.0}], "valid") is None


def test_protocol_index_cuts_at_the_protocols_own_stop():
    # valid peaks early and stalls; ood_valid keeps improving, so the shared run went on
    rows = [{"valid/Recall@20": v, "valid/NDCG@20": 0.0, "ood_valid/Recall@20": o, "ood_valid/NDCG@20": 0.0}
            for v, o in [(0.1, 0.1), (0.3, 0.2), (0.2, 0.3), (0.2, 0.4), (0.35, 0.5), (0.2, 0.6)]]
    keys = {"early_stop.patience": 2, "early_stop.min_epochs": 0}
    assert P.protocol_index(rows, "valid", keys) == 1  # IID-only stopping ends at epoch 4: 0.35 is never seen
    assert P.protocol_index(rows, "ood_valid", keys) == 5
    assert P.protocol_index(rows, "valid", {**keys, "early_stop.min_epochs": 5}) == 4


def test_candidates_tied_on_every_key_go_to_the_first_tag_and_are_counted():
    a, b, c = (0.3, 0.1, 0.2, 0.1), (0.3, 0.2, 0.0, 0.0), (0.3, 0.2, 0.0, 0.0)
    assert P.choose([("lr=0.01", a), ("lr=0.001", b)]) == ("lr=0.001", False)  # NDCG@20 decides, not the order
    assert P.choose([("z", c), ("lr=0.01", a), ("m", b)]) == ("m", True)  # b and c tie on all four: sorted tag
    assert P.choose([("b", c), ("m", b)]) == P.choose([("m", b), ("b", c)])  # the grid's order plays no part
    assert P.choose([]) == (None, False)


def _csv_rows(run):
    with (run / "epochs.csv").open() as handle:
        return [{k: float(v) for k, v in r.items() if v != ""} for r in csv.DictReader(handle)]


@pytest.fixture
def split(tmp_path, shared):
    """coat's OOD test rows in two parts: an OOD validation file and the rest."""
    lines = (shared / "coat" / "test_ood.txt").read_text().splitlines(keepends=True)
    (tmp_path / "ood_valid.txt").write_text("".join(lines[::3]))
    (tmp_path / "rest.txt").write_text("".join(lines[i] for i in range(len(lines)) if i % 3))
    return tmp_path / "ood_valid.txt", tmp_path / "rest.txt"


def test_a_cut_shared_curve_equals_a_run_that_stops_on_that_file_alone(tmp_path, shared, split):
    ood_valid, rest = split
    common = ["dataset=coat", f"dataset.root={shared}", "max.epoch=60", "early_stop.patience=3", "learning.rate=0.05",
              "fhn.probe=0", "selection=valid", "eval.mask=train"]  # a validation file is masked by train only:
    # with the same mask for every file, the OOD part scores the same as a test file and as the validation file
    status, shared_run = _run(tmp_path / "shared", *common, f"test.set.ood_valid={ood_valid}",
                              f"test.set.test_ood={rest}", "early_stop.files=ood_valid")
    assert status == 0
    status, iid_only = _run(tmp_path / "iid", *common, f"test.set.ood_valid={ood_valid}", f"test.set.test_ood={rest}")
    assert status == 0
    # a run stopping on the OOD validation part alone: that part is its validation file
    status, ood_only = _run(tmp_path / "ood", *common, f"valid.set={ood_valid}", f"test.set.test_ood={rest}",
                            f"test.set.iid={shared / 'coat' / 'valid.txt'}")
    assert status == 0
    whole, iid, ood = _csv_rows(shared_run[0]), _csv_rows(iid_only[0]), _csv_rows(ood_only[0])
    keys = {"early_stop.patience": 3}
    for protocol, alone, run, rename in (("valid", iid, iid_only[0], {}),
                                         ("ood_valid", ood, ood_only[0], {"valid": "ood_valid", "iid": "valid"})):
        last = P.stop_index(whole, P.validation_file(protocol), 3)
        assert last + 1 == len(alone) <= len(whole)  # that run stopped where the cut says
        renamed = [{"/".join([rename.get(k.split("/")[0], k.split("/")[0]), *k.split("/")[1:]]): v
                    for k, v in r.items() if not k.endswith("_s")} for r in alone]
        cut = [{k: v for k, v in r.items() if not k.endswith("_s")} for r in whole[: last + 1]]
        assert renamed == cut  # every loss term and metric of every epoch, bit for bit
        index = P.protocol_index(whole, protocol, keys)
        own = json.loads((run / "metrics.json").read_text())
        assert index + 1 == own["selection"]["epoch"]  # the epoch that run selected (no tie on these curves)
    assert len(iid) < len(whole)  # the shared run trained past the IID-only stop: the cut matters here
