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
    path = write(tmp_path / "t.txt", "0\n0 1\n0 5 1\n\n1 7 1.0\n2 8 x\n3 9 1 1\n" + "4 4 1\n" * 3)
    with caplog.at_level(logging.WARNING):
        raw = read_interactions(path, "triples")
    assert (raw.users, raw.items) == (["0", "1", "4", "4", "4"], ["5", "7", "4", "4", "4"])
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


def test_a_mostly_malformed_file_is_an_error_that_suggests_the_format(tmp_path):
    adjacency = "".join(f"{u} {' '.join(str(i) for i in range(u % 4 + 1))}\n" for u in range(20))
    path = write(tmp_path / "adj.txt", adjacency)  # 5 of 20 lines happen to have 3 fields
    with pytest.raises(DataFileError, match=r"adj.txt: 15 of 20 non-blank lines are malformed for "
                                            r"data.format='triples' .*it looks like data.format='adjacency'"):
        read_interactions(path, "triples")
    assert len(read_interactions(path, "adjacency")) == sum(u % 4 + 1 for u in range(20))


def test_bytes_that_are_not_utf8_name_the_file_and_line(tmp_path):
    path = tmp_path / "latin.txt"
    path.write_bytes("0 1 1\nj\u00fcrgen 2 1\n".encode("latin-1"))
    with pytest.raises(DataFileError, match=r"latin.txt, line 2: bytes that are not UTF-8"):
        read_interactions(path, "triples")
    path.write_bytes("0 1 1\nj\u00fcrgen 2 1\n".encode("utf-8"))  # real UTF-8 ids are kept as they are
    assert read_interactions(path, "triples").users == ["0", "j\u00fcrgen"]


def test_rows_with_low_or_non_finite_weight_are_dropped_and_counted(tmp_path, caplog):
    path = write(tmp_path / "w.txt", "0 1 1\n0 2 0\n0 3 -1\n0 4 nan\n0 5 inf\n0 6 2.5\n1 1 0.5\n")
    with caplog.at_level(logging.WARNING):
        raw = read_interactions(path, "triples")
    assert raw.items == ["1", "6", "1"] and raw.low_weight == 4
    assert "dropped 4 row(s) whose weight is <= 0 or not finite" in caplog.text
    assert read_interactions(path, "triples", min_weight=0.9).items == ["1", "6"]
    assert read_interactions(write(tmp_path / "p.txt", "0 1\n0 2 0\n"), "pairs").items == ["1"]
