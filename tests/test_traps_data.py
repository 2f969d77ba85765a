"""Bad data inputs found by the probe: each ends in one clear line with exit status 2, or is read correctly
with every skipped line counted (format detection over every file, byte-order marks and header lines, split
output folders, undecodable raw logs, an unwritable dataset.root, a user with every item)."""
from __future__ import annotations

import gzip
import logging
from pathlib import Path

import numpy as np
import pytest

from data import split as split_cli
from data import synthetic
from data.dataset import load_data
from data.interaction import Interaction
from data.loader import DataFileError, detect_formats, read_interactions
from data.rawlog import SplitError, read_log
from tests.conftest import write
from tests.test_end_to_end import _run


def _errors(caplog) -> list[str]:
    """The messages of the ERROR records."""
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]


def _one_error(caplog) -> str:
    """The single ERROR line a failed command logged."""
    errors = _errors(caplog)
    assert len(errors) == 1 and "\n" not in errors[0] and "Traceback" not in caplog.text, errors
    return errors[0]


def _pairs_train(folder: Path, users: int = 30, items: int = 25) -> Path:
    """A `user item` training file in which every user and every item occurs."""
    rows = [f"{u} {(u + k) % items}\n" for u in range(users) for k in range(4)]
    return write(folder / "train.txt", "".join(rows))


# ---- 1. the format is detected from every file, not from the training file only --------------------------
def test_an_adjacency_test_file_beside_a_pairs_train_file_is_an_error_naming_it(tmp_path, caplog):
    train = _pairs_train(tmp_path)
    # user u, items u+5 and u+6 (an adjacency list of 2-3 columns): read as pairs, the second item was a weight
    test = write(tmp_path / "test.txt", "".join(f"{u} {(u + 5) % 25} {(u + 6) % 25}\n" if u % 2 else
                                                f"{u} {(u + 5) % 25}\n" for u in range(30)))
    with pytest.raises(DataFileError, match=r"test.txt: data.format is required \(triples, pairs or adjacency\): "
                                            r"lines like `0 5 1` .* \(first at line 2\)"):
        load_data(train, {"test": test}, None)
    status, _ = _run(tmp_path, f"training.set={train}", f"test.set={test}", "max.epoch=1")
    assert status == 2 and "test.txt: data.format is required" in _one_error(caplog)
    # with the format named, every item of the adjacency file is read
    data = load_data(train, {"test": test}, "adjacency")
    assert data.eval_sets["test"].n_rows + sum(data.eval_sets["test"].dropped.values()) == 45


def test_an_adjacency_file_beside_two_column_files_decides_for_all(tmp_path, caplog):
    train = _pairs_train(tmp_path)
    test = write(tmp_path / "test.txt", "".join(f"{u} {(u + 5) % 25} {(u + 6) % 25} {(u + 7) % 25}\n"
                                                for u in range(30)))
    with caplog.at_level(logging.INFO):
        data = load_data(train, {"test": test}, None)
    assert "data.format not given: read as adjacency (test.txt: line 1 has 4 or more columns; triples and pairs " \
           "have at most 3); the other 1 file(s) fit it too" in caplog.text
    assert data.eval_sets["test"].n_rows == 90  # three items per line; read as pairs, every line was malformed


def test_files_whose_formats_disagree_are_an_error_naming_both(tmp_path):
    train = write(tmp_path / "train.txt", "".join(f"{u} {u % 9} {(u + 1) % 9} {(u + 2) % 9}\n" for u in range(20)))
    weighted = write(tmp_path / "valid.txt", "".join(f"{u} {(u + 4) % 9} 0.5\n" for u in range(20)))
    with pytest.raises(DataFileError, match=r"valid.txt: data.format is required: this file has a weight column "
                                            r"\(line 1 has .*\) but .*train.txt is an adjacency list"):
        detect_formats({"train": train, "valid": weighted})


def test_a_doubtful_file_beside_an_adjacency_file_says_which_format_the_other_shows(tmp_path):
    train = write(tmp_path / "train.txt", "".join(f"{u} {u % 9} {(u + 1) % 9} {(u + 2) % 9}\n" for u in range(20)))
    test = write(tmp_path / "test.txt", "".join(f"{u} {(u + 4) % 9} 1\n" for u in range(20)))  # `u i 1`: no guess
    with pytest.raises(DataFileError, match=r"test.txt: data.format is required .*; train.txt reads as adjacency "
                                            r"\(line 1 has 4 or more columns.*\): if every file is in that format, "
                                            r"set data.format to it"):
        detect_formats({"train": train, "test": test})
    # a fractional weight in one file and two columns in another: pairs reads both
    weighted = write(tmp_path / "w.txt", "".join(f"{u} {u % 7} 0.5\n" for u in range(20)))
    two = write(tmp_path / "two.txt", "1 2\n3 4\n")
    assert detect_formats({"train": weighted, "test": two})[0] == "pairs"
    assert detect_formats({"train": weighted, "test": weighted})[0] == "triples"


# ---- 2. byte-order marks and header lines ----------------------------------------------------------------
def test_a_byte_order_mark_is_ignored_and_logged(tmp_path, caplog):
    path = tmp_path / "train.txt"
    path.write_bytes(b"\xef\xbb\xbf" + b"0 1 1\n0 2 1\n1 1 1\n1 3 1\n")
    with caplog.at_level(logging.INFO):
        raw = read_interactions(path, "triples")
    assert raw.users == ["0", "0", "1", "1"] and raw.items == ["1", "2", "1", "3"] and raw.malformed == 0
    assert "ignored the UTF-8 byte-order mark" in caplog.text
    data = Interaction(raw, {"test": read_interactions(write(tmp_path / "t.txt", "1 2 1\n"), "triples")})
    assert data.n_users == 2 and data.user_ids == ["0", "1"]  # no phantom user "\ufeff0"


@pytest.mark.parametrize("header, fmt, rows", [
    ("user_id item_id", "pairs", "1 2\n1 3\n2 3\n"),
    ("user item rating", "adjacency", "1 2 3 4\n2 3\n"),
    ("userId\tmovieId\trating", "triples", "1\t2\t1\n2\t3\t1\n"),
    ("who what", "pairs", "1 2\n2 3\n"),  # not a known name, but the only line whose ids are not numbers
])
def test_a_header_line_is_skipped_and_logged_not_read_as_a_user(tmp_path, caplog, header, fmt, rows):
    path = write(tmp_path / "train.txt", f"\ufeff{header}\n{rows}")
    with caplog.at_level(logging.WARNING):
        raw = read_interactions(path, fmt)
    first = header.split()
    assert first[0] not in raw.users and first[1] not in raw.items and raw.header == 1 and raw.malformed == 0
    assert f"skipped line 1 `{' '.join(first)}` as a header" in caplog.text


def test_string_ids_are_kept_and_a_header_is_detected_before_the_format(tmp_path):
    strings = read_interactions(write(tmp_path / "s.txt", "alice book\nbob pen\n"), "pairs")
    assert strings.users == ["alice", "bob"] and strings.header == 0
    named = read_interactions(write(tmp_path / "n.txt", "user item\nalice book\n"), "pairs")
    assert named.users == ["alice"] and named.header == 1
    # a 3-column header over 2-column rows made the pairs file look like `0 5 1` lines
    path = write(tmp_path / "h.txt", "user item rating\n" + "".join(f"{u} {u % 4}\n" for u in range(10)))
    assert detect_formats({"train": path})[0] == "pairs"
    only = write(tmp_path / "o.txt", "user_id item_id\n")
    with pytest.raises(DataFileError, match=r"no valid interaction line \(1 lines, 0 malformed, 0 blank, 0 with "
                                            r"weight <= 0 or not finite, a header line 1\)"):
        read_interactions(only, "pairs")


def test_a_header_is_taken_back_from_the_malformed_counts(tmp_path, caplog):
    rows = "".join(f"{u}\n" for u in range(7)) + "".join(f"{u} {u + 1} 1\n" for u in range(20))
    path = write(tmp_path / "t.txt", "user item rating\n" + rows)
    with caplog.at_level(logging.WARNING):
        raw = read_interactions(path, "triples")
    assert raw.header == 1 and raw.malformed == 7 and raw.malformed_examples == [2, 3, 4, 5, 6] and len(raw) == 20
    assert "skipped 7 malformed line(s) (first at line(s) 2, 3, 4, 5, 6)" in caplog.text


# ---- 3. a split is never written over another ----------------------------------------------------------
def _log(path: Path) -> Path:
    """A raw `user,item,rating,timestamp` CSV log of 40 users over 30 items."""
    rng = np.random.default_rng(3)
    lines = ["userId,movieId,rating,timestamp\n"]
    for u in range(40):
        for i in rng.choice(30, size=12, replace=False):
            lines.append(f"{u},{i},{int(rng.integers(1, 6))},{int(rng.integers(1000, 2000))}\n")
    return write(path, "".join(lines))


def test_split_refuses_an_out_folder_that_already_holds_files(tmp_path, caplog):
    log_path = _log(tmp_path / "log.csv")
    out = tmp_path / "mine"
    old = {"train.txt": "a b 1\n", "valid.txt": "a c 1\n"}
    for name, text in old.items():
        write(out / name, text)
    args = ["popularity", "--log", str(log_path), "--out", str(out), "--min-user", "1", "--min-item", "1"]
    assert split_cli.main(args) == 2
    assert _one_error(caplog) == (f"--out {out} already holds 2 file(s) (train.txt, valid.txt); a split is never "
                                  f"written over another: choose a new --out folder, or remove this one first")
    assert {p.name: p.read_text() for p in out.iterdir()} == old  # nothing written, nothing lost
    caplog.clear()
    file_out = write(tmp_path / "file.txt", "x\n")
    assert split_cli.main(args[:4] + [str(file_out)] + args[5:]) == 2
    assert "is a file, not a folder" in _one_error(caplog)
    (tmp_path / "empty").mkdir()  # an empty folder (or a new one) is fine
    assert split_cli.main(args[:4] + [str(tmp_path / "empty")] + args[5:]) == 0
    assert (tmp_path / "empty" / "valid_iid.txt").is_file()


# ---- 4. raw logs that are not UTF-8 text ---------------------------------------------------------------
def test_a_latin1_log_names_the_file_and_line(tmp_path, caplog):
    path = tmp_path / "latin.csv"
    path.write_bytes("userId,movieId,rating\n1,2,4\nj\u00fcrgen,3,5\n".encode("latin-1"))
    args = ["popularity", "--log", str(path), "--out", str(tmp_path / "out"), "--min-user", "1", "--min-item", "1"]
    assert split_cli.main(args) == 2
    assert _one_error(caplog).startswith(f"{path}:3: bytes that are not UTF-8 (invalid start byte at byte 1 of the "
                                         f"line); the log must be UTF-8 text: convert it")
    assert not (tmp_path / "out").exists()


def test_a_binary_log_is_a_clear_error(tmp_path):
    packed = tmp_path / "ratings.csv.gz"
    packed.write_bytes(gzip.compress(b"userId,movieId,rating\n1,2,4\n" * 50))
    with pytest.raises(SplitError, match=r"ratings.csv.gz:1: bytes that are not UTF-8 .*unpack it first"):
        read_log(packed)
    nul = tmp_path / "nul.csv"
    nul.write_bytes(b"a,b\n1,2\x00\n")
    with pytest.raises(SplitError, match=r"nul.csv:2: item id '2\\x00' contains control characters"):
        read_log(nul)
    huge = tmp_path / "huge.csv"
    huge.write_bytes(b'a,"' + b"x" * 200_000 + b'"\n')
    with pytest.raises(SplitError, match=r"huge.csv:1: not a readable CSV line \(field larger than field limit"):
        read_log(huge)


# ---- 5. a dataset.root that cannot be written --------------------------------------------------------------
def test_an_unwritable_dataset_root_names_the_folder_and_the_key(tmp_path, caplog):
    root = write(tmp_path / "not-a-folder", "a regular file\n")  # nothing can be created under it (even as root)
    status, _ = _run(tmp_path, "dataset=synthetic", f"dataset.root={root}", "max.epoch=1")
    assert status == 2
    assert _one_error(caplog) == (f"{root / 'synthetic'}: cannot write the synthetic dataset there (Not a directory: "
                                  f"{root / 'synthetic'}); set dataset.root to a writable folder (the dataset is "
                                  f"generated in dataset.root/synthetic on first use)")
    caplog.clear()
    assert synthetic.main(["--out", str(root / "synthetic"), "--n-users", "10", "--n-items", "10"]) == 2
    assert "cannot write the synthetic dataset there (Not a directory" in _one_error(caplog)


# ---- 6. a user who interacted with every item --------------------------------------------------------------
def test_a_user_with_every_item_is_a_data_error_naming_the_user(tmp_path, caplog):
    rows = [f"u{u} i{(u + k) % 25}\n" for u in range(30) for k in range(3)] + [f"greedy i{i}\n" for i in range(25)]
    train = write(tmp_path / "train.txt", "".join(rows))
    test = write(tmp_path / "test.txt", "".join(f"u{u} i{(u + 5) % 25}\n" for u in range(30)))
    with pytest.raises(DataFileError, match=r"train.txt: user\(s\) 'greedy' interacted with every one of the 25 "
                                            r"training items, so no negative item exists for them"):
        load_data(train, {"test": test}, "pairs")
    status, _ = _run(tmp_path, f"training.set={train}", f"test.set={test}", "data.format=pairs", "max.epoch=1")
    assert status == 2 and "'greedy' interacted with every one of the 25 training items" in _one_error(caplog)
