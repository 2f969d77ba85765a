"""Loaders and Interaction: formats, malformed lines, missing/empty files, unknown ids, masks."""
from __future__ import annotations

import logging

import numpy as np
import pytest

from data.interaction import Interaction
from data.loader import DataFileError, read_interactions
from tests.conftest import write


def test_triples_skip_and_count_malformed_lines(tmp_path, caplog):
    # The real Yelp2018 split starts with the lines "0" and "0 1".
    path = write(tmp_path / "t.txt", "0\n0 1\n0 5 1\n\n1 7 1.0\n2 8 x\n3 9 1 1\n")
    with caplog.at_level(logging.WARNING):
        raw = read_interactions(path, "triples")
    assert (raw.users, raw.items) == (["0", "1"], ["5", "7"])
    assert raw.malformed == 4 and raw.blank == 1 and raw.malformed_examples == [1, 2, 6, 7]
    assert "skipped 4 malformed line(s)" in caplog.text


def test_pairs_accept_optional_weight(tmp_path):
    raw = read_interactions(write(tmp_path / "p.txt", "0 1\n0 2 1\n1\n1 2 z\n"), "pairs")
    assert (raw.users, raw.items, raw.malformed) == (["0", "0"], ["1", "2"], 2)


def test_adjacency_lists(tmp_path):
    raw = read_interactions(write(tmp_path / "a.txt", "0 1 2 3\n1 4\n2\n"), "adjacency")
    assert raw.users == ["0", "0", "0", "1"] and raw.items == ["1", "2", "3", "4"] and raw.malformed == 1


def test_same_line_means_different_rows_per_format(tmp_path):
    path = write(tmp_path / "x.txt", "0 5 1\n")
    assert len(read_interactions(path, "triples")) == 1
    assert len(read_interactions(path, "adjacency")) == 2


@pytest.mark.parametrize("text", ["", "\n\n", "a\nb\n", "0 1 2 3\n"])
def test_file_without_valid_line_is_an_error(tmp_path, text):
    with pytest.raises(DataFileError, match="no valid interaction line"):
        read_interactions(write(tmp_path / "e.txt", text), "triples")


def test_missing_file_and_unknown_format(tmp_path):
    with pytest.raises(FileNotFoundError, match="data file not found"):
        read_interactions(tmp_path / "absent.txt", "triples")
    with pytest.raises(DataFileError, match="unknown data.format"):
        read_interactions(write(tmp_path / "x.txt", "0 1 1\n"), "csv")


def _data(tmp_path, train, evals, mask="train_valid"):
    raw_train = read_interactions(write(tmp_path / "train.txt", train), "triples")
    raw_evals = {name: read_interactions(write(tmp_path / f"{name}.txt", text), "triples")
                 for name, text in evals.items()}
    return Interaction(raw_train, raw_evals, mask)


def test_unseen_ids_known_positives_and_duplicates_are_dropped_with_counts(tmp_path, caplog):
    train = "u0 a 1\nu0 b 1\nu1 b 1\nu1 c 1\nu1 c 1\n"
    evals = {"valid": "u0 c 1\n", "test": "u0 c 1\nu0 a 1\nu1 a 1\nu1 a 1\nu9 a 1\nu1 zz 1\n"}
    with caplog.at_level(logging.WARNING):
        data = _data(tmp_path, train, evals)
    assert (data.n_users, data.n_items, data.train.nnz, data.train_duplicates) == (2, 3, 4, 1)
    test = data.eval_sets["test"]
    # u0 c is in valid (masked for tests), u0 a in train; u9 and zz unseen; u1 a once after dedupe
    assert test.dropped == {"unseen_user": 1, "unseen_item": 1, "already_known": 2, "duplicate": 1}
    assert test.n_rows == 1 and test.users.tolist() == [data.user_index["u1"]]
    assert "dropped 5 of 6 row(s)" in caplog.text and "duplicate (user, item) row(s) in training" in caplog.text
    # the official-code option masks train only: u0 c becomes rankable
    data = _data(tmp_path, train, evals, mask="train")
    assert data.eval_sets["test"].n_rows == 2


def test_eval_file_with_no_rankable_user_is_an_error(tmp_path):
    with pytest.raises(DataFileError, match="no rankable user"):
        _data(tmp_path, "u0 a 1\n", {"test": "u1 a 1\nu0 a 1\n"})


def test_normalized_adjacency_matches_dense_formula(tmp_path):
    data = _data(tmp_path, "0 0 1\n0 1 1\n1 1 1\n2 2 1\n", {"test": "1 0 1\n"})
    n_u, n_i = data.n_users, data.n_items
    r = data.train.toarray()
    a = np.zeros((n_u + n_i, n_u + n_i))
    a[:n_u, n_u:], a[n_u:, :n_u] = r, r.T
    d = a.sum(1)
    expected = a / np.sqrt(np.outer(d, d))
    got = data.normalized_adjacency().toarray()
    np.testing.assert_allclose(got, expected, rtol=1e-6)
    np.testing.assert_allclose(got, got.T)


def test_real_files_load_with_counts(shared):
    raw = read_interactions(shared / "coat" / "train.txt", "adjacency")
    assert len(raw) == 1363 and raw.malformed == 0
    data = Interaction(raw, {"test_ood": read_interactions(shared / "coat" / "test_ood.txt", "adjacency")})
    assert data.n_users == 290 and data.eval_sets["test_ood"].n_rows > 0
