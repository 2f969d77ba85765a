"""bench.bench_eval, bench.bench_dens and bench.bench_contrastive on coat (what they write, not how fast), and the
benches' counts refused before anything runs."""
from __future__ import annotations

import json

import pytest

from bench import bench_contrastive, bench_dens, bench_epoch, bench_eval, bench_models, bench_spmm


def test_the_evaluation_is_timed_both_ways_and_written(tmp_path, shared):
    out = tmp_path / "bench"
    assert bench_eval.main(["--dataset", "coat", "--dataset-root", str(shared), "--repeats", "2", "--out",
                            str(out), "--set", f"test.set.test_ood={shared / 'coat' / 'test_ood.txt'}",
                            "--set", f"test.set.again={shared / 'coat' / 'test_ood.txt'}"]) == 0
    result = json.loads((out / "eval-coat-cpu.json").read_text())
    assert result["repeats"] == 2 and result["threads"] == 1 and result["items"] > 0
    assert set(result["eval_users"]) == {"valid", "test_ood", "again"}  # coat has no IID test file; --set gives two
    users = result["eval_users"]
    # file by file a row per file and user; shared one per user (valid's users include the tests')
    assert result["score_rows"]["per_file"] == sum(users.values())
    assert max(users.values()) <= result["score_rows"]["shared"] < sum(users.values())
    assert result["per_file_s"] > 0 and result["shared_s"] > 0
    low, high = result["ratio_range"]
    assert low <= result["shared_over_per_file"] <= high


def test_metrics_that_differ_between_the_two_ways_time_nothing(tmp_path, shared, monkeypatch, caplog):
    real = bench_eval.SharedRanking.evaluate

    def off_by_one_hit(self, user_emb, item_emb):
        metrics = real(self, user_emb, item_emb)
        metrics["valid"]["Recall@20"] += 1e-9
        return metrics
    monkeypatch.setattr(bench_eval.SharedRanking, "evaluate", off_by_one_hit)
    out = tmp_path / "bench"
    assert bench_eval.main(["--dataset", "coat", "--dataset-root", str(shared), "--repeats", "1", "--out",
                            str(out)]) == 1
    assert "differ" in caplog.text and not out.exists()


@pytest.mark.parametrize("main", [bench_contrastive.main, bench_dens.main, bench_epoch.main, bench_eval.main,
                                  bench_models.main, bench_spmm.main])
@pytest.mark.parametrize("flag,value", [("--repeats", "0"), ("--threads", "-1"), ("--repeats", "five")])
def test_a_count_below_one_is_argparses_one_line_error(main, flag, value, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        main([flag, value, "--out", str(tmp_path / "bench")])
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].endswith(f"argument {flag}: must be an integer >= 1, got '{value}'")
    assert not (tmp_path / "bench").exists()


@pytest.mark.parametrize("main", [bench_contrastive.main, bench_dens.main, bench_eval.main, bench_spmm.main])
def test_a_missing_dataset_is_exit_2_before_timing(main, tmp_path, caplog):
    assert main(["--dataset-root", str(tmp_path), "--out", str(tmp_path / "bench")]) == 2
    assert "not found" in caplog.text and not (tmp_path / "bench").exists()


def test_dens_scoring_is_timed_both_ways_and_written(tmp_path, shared):
    out = tmp_path / "bench"
    assert bench_dens.main(["--dataset", "coat", "--dataset-root", str(shared), "--repeats", "2", "--out", str(out),
                            "--set", "params.dens.n_candidates=4"]) == 0
    result = json.loads((out / "dens-coat-cpu.json").read_text())
    rows, layers, candidates, dim = result["shape_rows_layers_candidates_dim"]
    assert rows > 128 and layers == 3 and candidates == 4 and dim == 64  # coat's one batch, 2 layers, M from --set
    assert result["chunk_rows"] == 128 and result["chunked_s"] > 0 and result["whole_s"] > 0
    low, high = result["ratio_range"]
    assert low <= result["chunked_over_whole"] <= high


def test_dens_scoring_without_per_layer_is_refused(tmp_path, shared, caplog):
    out = tmp_path / "bench"
    assert bench_dens.main(["--dataset", "coat", "--dataset-root", str(shared), "--repeats", "1", "--out", str(out),
                            "--set", "params.dens.per_layer=false"]) == 2
    assert "per_layer is off" in caplog.text and not out.exists()


def test_dens_scores_that_differ_time_nothing_and_leave_the_chunk_size(tmp_path, shared, monkeypatch, caplog):
    import module.samplers.dens as dens
    real = dens.DENSSampler.layer_scores

    def chunk_dependent(self, batch, users_l, pos_l, weight):  # a broken chunking: the scores move with the size
        return real(self, batch, users_l, pos_l, weight) + dens.CHUNK_ROWS * 1e-6
    monkeypatch.setattr(dens.DENSSampler, "layer_scores", chunk_dependent)
    out = tmp_path / "bench"
    assert bench_dens.main(["--dataset", "coat", "--dataset-root", str(shared), "--repeats", "1", "--out",
                            str(out)]) == 1
    assert "differ" in caplog.text and not out.exists() and dens.CHUNK_ROWS == 128


def test_dens_scoring_with_an_embedding_size_not_a_multiple_of_16_is_refused(tmp_path, shared, caplog):
    out = tmp_path / "bench"
    assert bench_dens.main(["--dataset", "coat", "--dataset-root", str(shared), "--repeats", "1", "--out", str(out),
                            "--set", "embedding.size=24"]) == 2
    assert "multiple of 16" in caplog.text and not out.exists()


def test_the_contrastive_term_is_timed_both_ways_and_written(tmp_path, shared):
    out = tmp_path / "bench"
    assert bench_contrastive.main(["--dataset", "coat", "--dataset-root", str(shared), "--repeats", "2", "--out",
                                   str(out)]) == 0
    result = json.loads((out / "contrastive-coat-cpu.json").read_text())
    rows, dim = result["rows_dim"]
    assert rows > 1000 and dim == 64 and result["negatives"] == 2 * rows  # coat's one batch: B synthetic + B random
    assert result["frozen_s"] > 0 and result["trainable_s"] > 0
    low, high = result["ratio_range"]
    assert low <= result["frozen_over_trainable"] <= high


def test_contrastive_gradients_that_differ_time_nothing(tmp_path, shared, monkeypatch, caplog):
    import module.samplers.cnsdiff as cnsdiff
    real = cnsdiff.CNSDiffSampler.contrastive

    def frozen_dependent(self, pos_emb, hard, rand_emb):  # a broken freeze: the loss moves with it
        return real(self, pos_emb, hard, rand_emb) + (0.0 if hard.requires_grad else 1e-3 * rand_emb.sum())
    monkeypatch.setattr(cnsdiff.CNSDiffSampler, "contrastive", frozen_dependent)
    out = tmp_path / "bench"
    assert bench_contrastive.main(["--dataset", "coat", "--dataset-root", str(shared), "--repeats", "1", "--out",
                                   str(out)]) == 1
    assert "differ" in caplog.text and not out.exists()
