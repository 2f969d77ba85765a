"""bench.bench_losses at toy sizes: the row_cosines paths, the epoch cut, and bad input before anything is timed."""
from __future__ import annotations

import json

from bench.bench_epoch import limit_batches
from bench.bench_losses import main as bench_losses_main


def test_the_row_cosines_paths_are_timed_against_the_kernel_and_agree(tmp_path):
    out = tmp_path / "bench"
    assert bench_losses_main(["--parts", "paths", "--rows", "8", "--items", "50", "--dim", "4", "--negs", "5", "3",
                              "--repeats", "2", "--out", str(out)]) == 0
    results = json.loads((out / "losses-food-cpu.json").read_text())
    assert [p["negs"] for p in results["paths"]] == [5, 3] and results["threads"] == 1
    for part in results["paths"]:
        assert part["reference"] == "kernel" and list(part["paths"]) == ["kernel", "product", "gather"]
        assert part["paths"]["kernel"]["x_ref"] == 1.0 and len(part["paths"]["gather"]["runs_s"]) == 2
        assert all(r["max_abs_diff"] < 1e-5 and r["s"] > 0 for r in part["paths"].values())
    text = (out / "losses-food-cpu.md").read_text()
    assert "| path | ms | x kernel |" in text and text.count("| gather |") == 2 and "epoch" not in text


def test_an_epoch_cut_to_its_first_batches_draws_and_trains_only_those(tmp_path):
    from tests.test_samplers import _recommender, _toy_data
    data, _ = _toy_data()
    rec = _recommender(tmp_path, "rns", data, **{"loss.name": "softmax", "params.rns.n_negs": 7, "fhn.probe": 0,
                                                  "batch.size": 16})
    assert len(rec.epoch_sampler) > 3 * 16
    seen = []
    batch_loss = rec.batch_loss
    rec.batch_loss = lambda users, pos, negs, epoch: seen.append(negs.shape) or batch_loss(users, pos, negs, epoch)
    limit_batches(rec, 2)
    rec.train_epoch(0)
    assert seen == [(16, 7), (16, 7)]
    assert len(rec.epoch_sampler.epoch()[2]) == 32  # the whole-epoch draw (BPR's) is cut too


def test_each_loss_epoch_is_timed_against_its_samplers_bpr(tmp_path, shared):
    """SL on RNS against RNS + BPR, SL on CNSDiff's negatives against CNSDiff + BPR: one reference each."""
    out = tmp_path / "bench"
    assert bench_losses_main(["--dataset", "coat", "--dataset-root", str(shared), "--parts", "epochs", "--configs",
                              "softmax", "cnsdiff+softmax", "--negs", "4", "--max-batches", "1", "--repeats", "1",
                              "--out", str(out)]) == 0
    losses = json.loads((out / "losses-coat-cpu.json").read_text())["epochs"][0]["losses"]
    assert {name: r["reference"] for name, r in losses.items()} == {"softmax": "bpr", "cnsdiff+softmax": "cnsdiff"}
    assert {name: r["reg_form"] for name, r in losses.items()} == {"softmax": "weight_decay",
                                                                   "cnsdiff+softmax": "weight_decay"}
    assert losses["cnsdiff+softmax"]["bpr_reg_form"] == "selfrec"  # CNSDiff's reference form (the released code)
    assert all(r["epoch_s"] > 0 and r["x_bpr"] > 0 for r in losses.values())
    text = (out / "losses-coat-cpu.md").read_text()
    assert "| cnsdiff+softmax | 4 | weight_decay |" in text and "| CNSDiff + BPR (selfrec) |" in text


def test_bad_settings_are_one_line_and_exit_2_before_timing(tmp_path, caplog):
    out = tmp_path / "bench"
    assert bench_losses_main(["--dataset-root", str(tmp_path), "--out", str(out)]) == 2
    assert "data file(s) not found" in caplog.text
    assert bench_losses_main(["--parts", "epochs", "--set", "params.psl.activation=sin", "--out", str(out)]) == 2
    assert "activation must be one of" in caplog.text
    assert bench_losses_main(["--negs", "0", "--out", str(out)]) == 2
    assert not out.exists()  # nothing was timed or written
