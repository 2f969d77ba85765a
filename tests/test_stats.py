"""data/stats.py: Gini, the popularity profile, overlap checks, folder detection and the command line."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from data.loader import DataFileError
from data.stats import folder_stats, gini, main, split_stats

SHARED = Path(__file__).resolve().parents[1] / ".." / "shared" / "datasets"
needs_shared = pytest.mark.skipif(not SHARED.is_dir(), reason="../shared/datasets is not available")


def test_gini_known_values():
    assert gini(np.array([3, 3, 3])) == pytest.approx(0.0)
    assert gini(np.array([0, 0, 0, 10])) == pytest.approx(0.75)
    assert gini(np.array([1, 2, 3, 4])) == pytest.approx(0.25)
    assert gini(np.array([])) == 0.0


def test_split_stats_by_hand():
    # train: item a x3, b x1, c x1 -> head = the top ceil(0.2 * 3) = 1 item: a
    train = (["u1", "u1", "u2", "u3", "u2"], ["a", "b", "a", "a", "c"])
    test = (["u1", "u2", "u9", "u1", "u1"], ["c", "c", "a", "z", "c"])
    stats = split_stats({"train": train, "test": test})
    t, s = stats["files"]["train"], stats["files"]["test"]
    assert (t["rows"], t["users"], t["items"], t["duplicates"]) == (5, 3, 3, 0)
    assert t["train_pop_mean"] == pytest.approx((3 * 3 + 1 + 1) / 5)
    assert t["head20_share"] == pytest.approx(3 / 5)
    assert (s["rows"], s["users"], s["items"], s["duplicates"]) == (5, 3, 3, 1)
    assert (s["unseen_users"], s["unseen_items"], s["rows_unrankable"]) == (1, 1, 2)
    assert s["train_pop_mean"] == pytest.approx(1.0)  # rows c, c, c (the u9 and z rows cannot be ranked)
    assert s["head20_share"] == 0.0
    assert stats["overlaps"] == {"train&test": 1}  # (u2, c)
    with pytest.raises(ValueError, match="no training file"):
        split_stats({"test": test})


def test_integer_and_string_ids_give_the_same_numbers():
    rng = np.random.default_rng(0)
    u, i = rng.integers(0, 30, 200), rng.integers(0, 50, 200)
    as_int = split_stats({"train": (u[:150], i[:150]), "test": (u[150:], i[150:])})
    as_str = split_stats({"train": (u[:150].astype(str), i[:150].astype(str)),
                          "test": (u[150:].astype(str), i[150:].astype(str))})
    assert as_int == as_str


@needs_shared
def test_preset_folder_uses_the_preset_format():
    stats = folder_stats(SHARED / "coat")
    assert stats["format"] == "adjacency"
    assert [stats["files"][n]["rows"] for n in ("train", "valid", "test_ood")] == [1363, 553, 860]
    assert stats["overlaps"]["train&test_ood"] + stats["overlaps"]["valid&test_ood"] > 0  # a known defect of coat
    # popularity profile: the uniformly exposed test leans much less on popular items than train
    assert stats["files"]["test_ood"]["train_pop_mean"] < 0.8 * stats["files"]["train"]["train_pop_mean"]


def test_other_folder_defaults_to_triples_and_counts_malformed_lines(tmp_path):
    (tmp_path / "train.txt").write_text("0\n0 1\n0 5 1\n1 5 1\n1 6 1\n")  # Yelp2018's two bad first lines
    (tmp_path / "test_ood.txt").write_text("0 6 1\n")
    stats = folder_stats(tmp_path)
    assert stats["format"] == "triples"
    assert stats["files"]["train"]["malformed_lines"] == 2 and stats["files"]["train"]["rows"] == 3
    assert list(stats["files"]) == ["train", "test_ood"]
    as_pairs = folder_stats(tmp_path, "pairs")
    assert as_pairs["files"]["train"]["malformed_lines"] == 1 and as_pairs["files"]["train"]["rows"] == 4


def test_folder_without_train_is_an_error(tmp_path):
    (tmp_path / "test_ood.txt").write_text("0 6 1\n")
    with pytest.raises(DataFileError, match="no train.txt"):
        folder_stats(tmp_path)
    with pytest.raises(DataFileError, match="not a folder"):
        folder_stats(tmp_path / "nope")


def test_cli_prints_the_table_and_writes_json(tmp_path, capsys, caplog):
    (tmp_path / "train.txt").write_text("0 5 1\n1 5 1\n1 6 1\n")
    (tmp_path / "test_iid.txt").write_text("0 6 1\n")
    assert main([str(tmp_path), "--json", str(tmp_path / "out.json")]) == 0
    printed = capsys.readouterr().out
    assert "test_iid" in printed and "pop_train" in printed and "shared (user, item) pairs: none" in printed
    assert json.loads((tmp_path / "out.json").read_text())["files"]["test_iid"]["rows"] == 1
    assert main([str(tmp_path / "missing")]) == 2
    assert "not a folder" in caplog.text
