"""data/split.py (temporal, popularity, exposure builders; the grids' ood_valid split) and data/kuairec.py on real
and constructed logs."""
from __future__ import annotations

import csv
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from data import download, kuairec
from data.loader import read_interactions
from data.rawlog import LogFormat, SplitError, read_log
from data.split import SplitSpec, build_split, main, split_ood_valid, write_ood_valid_split

SHARED = Path(__file__).resolve().parents[1] / ".." / "shared" / "datasets"
RATINGS = SHARED / "ml-latest-small" / "ratings.csv"
NAMES = ("train", "valid_iid", "test_iid", "test_ood")
needs_movielens = pytest.mark.skipif(not RATINGS.is_file(), reason="../shared/datasets/ml-latest-small is absent")


def _pairs(folder: Path) -> dict[str, list[tuple[str, str]]]:
    """The (user, item) rows of each built file, read back with the triples loader."""
    out = {}
    for name in NAMES:
        raw = read_interactions(folder / f"{name}.txt", "triples")
        assert raw.malformed == 0
        out[name] = list(zip(raw.users, raw.items))
    return out


def _movielens() -> dict[tuple[str, str], tuple[float, int]]:
    with RATINGS.open() as handle:
        return {(r["userId"], r["movieId"]): (float(r["rating"]), int(r["timestamp"])) for r in csv.DictReader(handle)}


def _check_disjoint_and_rankable(pairs: dict[str, list]) -> None:
    sets = {name: set(rows) for name, rows in pairs.items()}
    for name, rows in pairs.items():
        assert rows, f"{name} is empty"
        assert len(sets[name]) == len(rows), f"{name} has duplicate rows"
    for a in NAMES:
        for b in NAMES:
            if a < b:
                assert not sets[a] & sets[b], f"{a} and {b} share pairs"
    train_users = {u for u, _ in pairs["train"]}
    train_items = {i for _, i in pairs["train"]}
    for name in NAMES[1:]:
        assert {u for u, _ in pairs[name]} <= train_users, name
        assert {i for _, i in pairs[name]} <= train_items, name


def _check_ratios(pairs: dict[str, list], ratios=(5, 1, 2), tol: float = 0.02) -> None:
    sizes = np.array([len(pairs[n]) for n in NAMES[:3]], dtype=float)
    assert np.allclose(sizes / sizes.sum(), np.array(ratios) / sum(ratios), atol=tol), sizes


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """Temporal and popularity splits of MovieLens (ratings >= 4 are positives), built once."""
    if not RATINGS.is_file():
        pytest.skip("../shared/datasets/ml-latest-small is absent")
    out = {}
    for shift in ("temporal", "popularity"):
        folder = tmp_path_factory.mktemp(shift)
        stats = build_split(RATINGS, folder, SplitSpec(shift, threshold=4.0, seed=7))
        out[shift] = (folder, stats)
    return out


@needs_movielens
def test_temporal_split_is_strictly_later(built):
    folder, stats = built["temporal"]
    pairs = _pairs(folder)
    _check_disjoint_and_rankable(pairs)
    _check_ratios(pairs)
    log = _movielens()
    for name, rows in pairs.items():
        assert all(log[p][0] >= 4.0 for p in rows), f"{name} holds a rating below the threshold"
    before = max(log[p][1] for n in NAMES[:3] for p in pairs[n])
    assert min(log[p][1] for p in pairs["test_ood"]) > before
    assert stats["build"]["dropped_unrankable"]["test_ood"] > 0  # cold users of the late period are counted


@needs_movielens
def test_popularity_split_flattens_the_ood_items(built):
    folder, stats = built["popularity"]
    pairs = _pairs(folder)
    _check_disjoint_and_rankable(pairs)
    _check_ratios(pairs)
    pop = Counter(i for _, i in pairs["train"])
    mean_train = np.mean([pop[i] for _, i in pairs["train"]])
    mean_ood = np.mean([pop[i] for _, i in pairs["test_ood"]])
    mean_iid = np.mean([pop[i] for _, i in pairs["test_iid"]])
    assert mean_ood < 0.5 * mean_train, (mean_ood, mean_train)
    assert mean_iid > 0.8 * mean_train  # the IID test keeps the training profile
    per_item = Counter(i for _, i in pairs["test_ood"])
    assert max(per_item.values()) <= stats["build"]["ood_item_cap"]
    n_rest = sum(len(pairs[n]) for n in NAMES[:3])
    assert 0.15 < len(pairs["test_ood"]) / (n_rest + len(pairs["test_ood"])) < 0.22
    assert stats["files"]["test_ood"]["item_pop_gini"] < stats["files"]["train"]["item_pop_gini"] - 0.2


@needs_movielens
def test_seeded_builds_are_byte_identical(tmp_path, built):
    folder, _ = built["popularity"]
    build_split(RATINGS, tmp_path / "again", SplitSpec("popularity", threshold=4.0, seed=7))
    build_split(RATINGS, tmp_path / "other", SplitSpec("popularity", threshold=4.0, seed=8))
    for name in [f"{n}.txt" for n in NAMES] + ["stats.json"]:
        assert (tmp_path / "again" / name).read_bytes() == (folder / name).read_bytes(), name
    assert (tmp_path / "other" / "test_ood.txt").read_bytes() != (folder / "test_ood.txt").read_bytes()


@needs_movielens
def test_stats_json_counts_match_the_files(built):
    folder, stats = built["temporal"]
    on_disk = json.loads((folder / "stats.json").read_text())
    assert on_disk == json.loads(json.dumps(stats))
    pairs = _pairs(folder)
    for name in NAMES:
        assert on_disk["files"][name]["rows"] == len(pairs[name])
        assert on_disk["files"][name]["users"] == len({u for u, _ in pairs[name]})
    assert set(on_disk["overlaps"].values()) == {0}
    assert on_disk["build"]["spec"]["shift"] == "temporal" and on_disk["build"]["log"] == "ratings.csv"


# ---- exposure: a constructed log with a separately collected, uniformly exposed part ----------------
def _exposure_logs(folder: Path, seed: int = 0) -> tuple[Path, Path, set, set]:
    """A popularity-biased log and a uniform-exposure log (whitespace, `user item rating`), some pairs in both."""
    rng = np.random.default_rng(seed)
    n_users, n_items = 80, 50
    pop = 1.0 / np.arange(1, n_items + 1)
    biased, random_log = [], []
    for u in range(n_users):
        for i in rng.choice(n_items, size=20, replace=False, p=pop / pop.sum()):
            biased.append((f"u{u}", f"i{i}", int(rng.integers(1, 6))))
        for i in rng.choice(n_items, size=8, replace=False):
            random_log.append((f"u{u}", f"i{i}", int(rng.integers(1, 6))))
    random_log.append(("u_new", "i1", 5))  # a user the biased log never saw: cannot be ranked
    folder.mkdir(parents=True, exist_ok=True)
    paths = folder / "biased.txt", folder / "random.txt"
    for path, rows in zip(paths, (biased, random_log)):
        path.write_text("".join(f"{u} {i} {r}\n" for u, i, r in rows))
    positives = ({(u, i) for u, i, r in biased if r >= 3}, {(u, i) for u, i, r in random_log if r >= 3})
    return paths[0], paths[1], positives[0], positives[1]


def test_exposure_split_uses_the_random_log_as_ood(tmp_path):
    biased, random_log, biased_pos, random_pos = _exposure_logs(tmp_path)
    stats = build_split(biased, tmp_path / "out", SplitSpec("exposure", threshold=3, min_user=2, min_item=2),
                        ood_log_path=random_log)
    pairs = _pairs(tmp_path / "out")
    _check_disjoint_and_rankable(pairs)
    _check_ratios(pairs, tol=0.04)
    train_users = {u for u, _ in pairs["train"]}
    train_items = {i for _, i in pairs["train"]}
    expected_ood = {(u, i) for u, i in random_pos if u in train_users and i in train_items}
    assert set(pairs["test_ood"]) == expected_ood
    iid = set(pairs["train"]) | set(pairs["valid_iid"]) | set(pairs["test_iid"])
    assert iid <= biased_pos - random_pos  # a pair exposed at random leaves the biased files
    assert stats["build"]["log_rows_also_in_ood_log"] == len(biased_pos & random_pos) > 0
    assert stats["build"]["dropped_unrankable"]["test_ood"] >= 1  # u_new
    assert stats["build"]["ood_log"] == "random.txt"


def test_exposure_needs_the_random_log(tmp_path):
    biased, _, _, _ = _exposure_logs(tmp_path)
    with pytest.raises(SplitError, match="needs a separately collected"):
        build_split(biased, tmp_path / "out", SplitSpec("exposure"))
    with pytest.raises(SplitError, match="only used by the exposure shift"):
        build_split(biased, tmp_path / "out", SplitSpec("popularity"), ood_log_path=biased)


# ---- KuaiRec from its raw CSV layout --------------------------------------------------------------
KUAIREC_HEADER = "user_id,video_id,play_duration,video_duration,time,date,timestamp,watch_ratio\n"


def _kuairec_raw(folder: Path) -> tuple[set, set]:
    """Small big_matrix.csv / small_matrix.csv in the raw release's layout; returns their positive pairs."""
    rng = np.random.default_rng(1)
    data = folder / "KuaiRec 2.0" / "data"
    data.mkdir(parents=True)
    positives = []
    for name, n_users, n_items, per_user in (("big_matrix.csv", 40, 60, 30), ("small_matrix.csv", 15, 20, 20)):
        lines, pos = [KUAIREC_HEADER], set()
        for u in range(n_users):
            for v in rng.choice(n_items, size=per_user, replace=False):
                ratio = float(rng.choice([0.5, 1.5, 2.0, 3.7]))
                stamp = "" if rng.random() < 0.1 else f"{1593898000 + u}.0"  # the release has empty times
                lines.append(f"{u},{v},{int(ratio * 1000)},1000,,{'' if not stamp else 20200705},{stamp},{ratio}\n")
                if ratio >= 2.0:
                    pos.add((str(u), str(v)))
        (data / name).write_text("".join(lines))
        positives.append(pos)
    return positives[0], positives[1]


def test_kuairec_rebuild_from_raw_csvs(tmp_path):
    big_pos, small_pos = _kuairec_raw(tmp_path / "raw")
    assert download.main(["kuairec", "--raw", str(tmp_path / "raw"), "--root", str(tmp_path / "dataset")]) == 0
    pairs = _pairs(tmp_path / "dataset" / "kuairec")
    _check_disjoint_and_rankable(pairs)
    assert set(pairs["test_ood"]) <= small_pos
    assert set(pairs["train"]) | set(pairs["valid_iid"]) | set(pairs["test_iid"]) <= big_pos - small_pos
    assert len(pairs["test_ood"]) > 20


def test_kuairec_without_raw_files_is_a_clear_error(tmp_path):
    with pytest.raises(SplitError, match="big_matrix.csv not found"):
        kuairec.build(tmp_path, tmp_path / "out")


# ---- reading logs: formats and bad input ----------------------------------------------------------
def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_read_log_formats(tmp_path):
    plain = read_log(_write(tmp_path / "a.txt", "u1 i1 4 10\n\nu1 i2 2 11\nu2 i1 5 12\n"))
    assert plain.times.tolist() == [10, 11, 12] and plain.ratings.tolist() == [4, 2, 5]
    assert plain.user_vocab.names == ["u1", "u2"] and plain.items.tolist() == [0, 1, 0]
    named = read_log(_write(tmp_path / "b.csv", "ts,score,item_id,user_id\n5,1.5,a,x\n6,3,b,y\n"), threshold=2)
    assert named.user_vocab.names == ["y"] and named.times.tolist() == [6] and named.rows_below_threshold == 1
    bom = read_log(_write(tmp_path / "e.csv", "\ufeffuserId,movieId\n1,2\n"))  # a spreadsheet's byte order mark
    assert bom.user_vocab.names == ["1"] and bom.item_vocab.names == ["2"] and bom.rows_read == 1
    chosen = read_log(_write(tmp_path / "c.tsv", "x\t7\ta\n"), LogFormat(user=2, item="0", rating=None))
    assert chosen.user_vocab.names == ["a"] and chosen.item_vocab.names == ["x"] and chosen.ratings is None


@pytest.mark.parametrize("text, pattern", [
    ("", "the log is empty"),
    ("userId,movieId,rating\n", "no data rows"),
    ("userId,rating\n1,4\n", "has no item column"),
    ("userId,movieId,rating,timestamp\n1,2,4,5\n1,3\n", r":3: 2 field\(s\).*missing columns"),
    ("userId,movieId,rating\n1,2,4\n1,3,good\n", r":3: rating 'good' is not a number"),
    ("userId,movieId,rating\n1,2,nan\n", "rating 'nan' is not a finite number"),
    ("userId,movieId,rating,timestamp\n1,2,4,yesterday\n", "timestamp 'yesterday' is not a number"),
    ('userId,movieId,rating\n1,"a b",4\n', "item id 'a b' is empty or contains whitespace"),
    ("userId,movieId,rating\n1,2,1\n", r"no row has rating >= 4"),
    ("u1\n", "a log needs user and item columns"),
])
def test_bad_logs_give_clear_errors(tmp_path, text, pattern):
    path = _write(tmp_path / "log.csv", text)
    with pytest.raises(SplitError, match=pattern):
        build_split(path, tmp_path / "out", SplitSpec("popularity", threshold=4.0, min_user=1, min_item=1))
    assert not (tmp_path / "out" / "train.txt").exists()


def test_unknown_column_and_threshold_without_ratings(tmp_path):
    path = _write(tmp_path / "log.csv", "user,item\n1,2\n")
    with pytest.raises(SplitError, match="no rating column named 'stars'"):
        read_log(path, LogFormat(rating="stars"))
    with pytest.raises(SplitError, match="threshold needs a rating column"):
        read_log(path, threshold=1.0)


def test_nothing_left_after_filtering(tmp_path):
    path = _write(tmp_path / "log.txt", "".join(f"u{k % 3} i{k} 5 {k}\n" for k in range(12)))
    with pytest.raises(SplitError, match="no rows left after filtering"):
        build_split(path, tmp_path / "out", SplitSpec("temporal", min_user=2, min_item=2))


def test_temporal_needs_timestamps_and_a_usable_cut(tmp_path):
    no_time = _write(tmp_path / "a.txt", "".join(f"u{k % 4} i{k % 5} 5\n" for k in range(40)))
    with pytest.raises(SplitError, match="needs a timestamp column"):
        build_split(no_time, tmp_path / "out", SplitSpec("temporal", min_user=1, min_item=1))
    # the late rows all belong to a new user: test_ood would be empty
    early = "".join(f"u{k % 4} i{k % 5} 5 {k}\n" for k in range(40))
    late = "".join(f"late i{k % 5} 5 {100 + k}\n" for k in range(10))
    cold = _write(tmp_path / "b.txt", early + late)
    with pytest.raises(SplitError, match="test_ood.txt would be empty"):
        build_split(cold, tmp_path / "out", SplitSpec("temporal", min_user=1, min_item=1))


@pytest.mark.parametrize("spec, pattern", [
    (SplitSpec("popular"), "unknown shift"),
    (SplitSpec("temporal", ood_frac=1.0), "ood_frac"),
    (SplitSpec("temporal", ratios=(5, 0, 2)), "ratios"),
    (SplitSpec("temporal", min_user=0), "min_user"),
])
def test_bad_settings(tmp_path, spec, pattern):
    with pytest.raises(SplitError, match=pattern):
        build_split(tmp_path / "missing.csv", tmp_path / "out", spec)


@needs_movielens
def test_cli_builds_and_reports(tmp_path, capsys, caplog):
    out = tmp_path / "pop"
    assert main(["popularity", "--log", str(RATINGS), "--out", str(out), "--threshold", "4",
                 "--ratios", "6:1:1", "--min-user", "10"]) == 0
    printed = capsys.readouterr().out
    assert "test_ood" in printed and "pop_train" in printed
    stats = json.loads((out / "stats.json").read_text())
    assert stats["build"]["spec"]["ratios"] == [6, 1, 1] and stats["build"]["spec"]["min_user"] == 10
    bad = _write(tmp_path / "bad.csv", "userId,movieId,rating\n1,2,x\n")
    assert main(["temporal", "--log", str(bad), "--out", str(tmp_path / "bad")]) == 2
    assert "rating 'x' is not a number" in caplog.text


def test_the_ood_valid_split_takes_the_floor_of_each_users_share_seeded(tmp_path):
    users = np.array(["u2"] * 7 + ["u1"] * 3 + ["u10"] * 10)
    order, is_valid = split_ood_valid(users, 0.3)
    assert sorted(order) == list(range(len(users))) and list(users[order]) == sorted(users)  # by user
    assert Counter(users[order][is_valid]) == {"u2": 2, "u10": 3}  # floor(0.3 x 3) = 0: u1 gives none
    again = split_ood_valid(users, 0.3)
    assert (again[0] == order).all() and (again[1] == is_valid).all()  # seeded
    assert not (split_ood_valid(users, 0.3, seed=1)[0] == order).all()
    source = tmp_path / "test_ood.txt"
    source.write_text("u2 " + " ".join(f"i{k}" for k in range(7)) + "\nu1 i0 i1 i2\n")  # adjacency lists
    rows = write_ood_valid_split(source, "adjacency", 0.3, tmp_path / "split")
    assert rows == {"ood_valid": 2, "test_ood": 8}
    valid = read_interactions(tmp_path / "split" / "ood_valid.txt", "adjacency")
    rest = read_interactions(tmp_path / "split" / "test_ood_rest.txt", "adjacency")
    assert valid.users == ["u2", "u2"] and sorted(rest.users) == ["u1"] * 3 + ["u2"] * 5
    assert sorted(valid.items + rest.items) == sorted([f"i{k}" for k in range(7)] + ["i0", "i1", "i2"])
