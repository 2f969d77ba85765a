"""The verdict's intervals and words on constructed seeds, and the README's answer block against the records."""
from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest
from scipy import stats

from bench import verdict as V
from bench.table import provenance
from tests.conftest import REPO


def test_a_paired_interval_is_the_t_interval_of_the_differences():
    other = {s: 0.10 + 0.01 * s for s in range(10)}  # seeds move both methods alike: pairing removes it
    spread = [0.002, -0.001, 0.0005, -0.002, 0.001, 0.0, 0.0015, -0.0005, 0.001, -0.0015]
    mine = {s: other[s] + 0.003 + e for s, e in zip(range(10), spread)}
    found = V.interval(mine, other)
    d = np.array([mine[s] - other[s] for s in range(10)])
    assert found.paired and found.n == 10 and found.diff == pytest.approx(0.003 + np.mean(spread))
    half = stats.t.ppf(0.975, 9) * d.std(ddof=1) / math.sqrt(10)
    assert (found.low, found.high) == pytest.approx((d.mean() - half, d.mean() + half))
    ci = stats.ttest_1samp(d, 0.0).confidence_interval(0.95)  # scipy's own, an independent check
    assert (found.low, found.high) == pytest.approx((ci.low, ci.high))
    assert found.word == "better" and found.boot_word == "better"
    assert found.boot_low < found.diff < found.boot_high
    assert V.interval(mine, other) == found  # the bootstrap is seeded: the same records give the same digits
    # unpaired, the seeds' common movement (0.01 per seed) swamps a 0.003 difference
    assert V.interval(mine, {s + 100: v for s, v in other.items()}).word == "level"


@pytest.mark.parametrize("shift,word", [(0.01, "better"), (0.0, "level"), (-0.01, "worse")])
def test_the_word_comes_from_the_interval(shift, word):
    rng = np.random.default_rng(1)
    other = {s: 0.2 + rng.normal(0, 0.01) for s in range(10)}
    mine = {s: other[s] + shift + rng.normal(0, 0.002) for s in range(10)}
    found = V.interval(mine, other)
    assert found.word == word
    rec = {"other": "dens", **vars(found), "word": found.word, "boot_word": found.boot_word}
    text = V.shown(rec)
    assert text.split("]")[1].strip().startswith(word)
    assert ("width" in text) == (word == "level")


def test_an_unpaired_interval_is_welchs_and_too_few_seeds_give_none():
    mine, other = {1: 0.30, 2: 0.32, 3: 0.31, 4: 0.33}, {11: 0.20, 12: 0.25, 13: 0.22}
    found = V.interval(mine, other)
    ci = stats.ttest_ind(list(mine.values()), list(other.values()), equal_var=False).confidence_interval(0.95)
    assert not found.paired and (found.low, found.high) == pytest.approx((ci.low, ci.high))
    assert V.interval({1: 0.3}, {1: 0.2}) is None  # one pair, one seed each: no interval
    fixed = V.interval({1: 0.3, 2: 0.3}, {5: 0.2, 6: 0.2})  # no spread on either side (closed-form models)
    assert fixed.low == fixed.high == pytest.approx(0.1) and fixed.word == "better"
    closed_form = V.interval({1: 0.30, 2: 0.32, 3: 0.31}, {1: 0.29, 2: 0.29, 3: 0.29})  # EASE: the same every seed
    # t with 2 degrees of freedom is wide; the percentile bootstrap of 3 values is far too narrow: why the word
    # comes from the t interval
    assert closed_form.paired and closed_form.word == "level" and closed_form.boot_word == "better"


# ---- a constructed grid folder -------------------------------------------------------------
def _grid(folder, values, best_other, deferred=None, methods=None):
    """grid.json and runs: values[method][seed] = test_ood Recall@20 (NDCG@20 half of it), one epoch each."""
    cells = []
    for method, per_seed in values.items():
        for seed, value in per_seed.items():
            run = folder / "runs" / "d" / method / "default" / f"s{seed}" / "r"
            run.mkdir(parents=True)
            (run / "config.json").write_text(json.dumps({"commit": "abc1234"}))
            row = {"epoch": 1, "valid/Recall@20": 0.5, "valid/NDCG@20": 0.5, "test_ood/Recall@20": value,
                   "test_ood/NDCG@20": value / 2}
            with (run / "epochs.csv").open("w") as handle:
                writer = csv.DictWriter(handle, fieldnames=list(row))
                writer.writeheader()
                writer.writerow(row)
            cells.append({"id": f"d/{method}/default/s{seed}", "dataset": "d", "method": method, "candidate": {},
                          "seed": seed, "state": "finished", "error": "", "run": str(run.relative_to(folder))})
    (folder / "grid.json").write_text(json.dumps({
        "grid": "g", "grid_file": "conf/grids/g.yaml", "protocols": ["valid"], "datasets": ["d"], "cells": cells,
        "choices": {f"d/{m}": {"valid": {}} for m in values},
        "power": {"seeds": [1, 2, 3], "methods": ["cns"], "at_least": {}, "best_other": best_other},
        **({"deferred": deferred} if deferred else {}), **({"methods": methods} if methods else {})}))


def test_the_verdict_and_the_readme_block_from_records(tmp_path):
    values = {"cns": {1: 0.30, 2: 0.31, 3: 0.32}, "dens": {1: 0.20, 2: 0.215, 3: 0.22}, "rns": {1: 0.4, 2: 0.4, 3: 0.4}}
    _grid(tmp_path, values, {"d/valid": "dens"})  # rns tests best, but validation named DENS: the verdict uses DENS
    records = V.verdicts(tmp_path)
    recall = next(r for r in records if r["metric"] == "Recall@20")
    assert recall["other"] == "dens" and recall["n"] == 3 and recall["paired"]
    assert recall["mean"] == pytest.approx(0.31) and recall["other_mean"] == pytest.approx(0.635 / 3)
    d = np.array([0.10, 0.095, 0.10])
    assert recall["low"] == pytest.approx(d.mean() - stats.t.ppf(0.975, 2) * d.std(ddof=1) / math.sqrt(3))
    ndcg = next(r for r in records if r["metric"] == "NDCG@20")
    assert ndcg["mean"] - ndcg["other_mean"] == pytest.approx(0.295 / 6) == pytest.approx(ndcg["diff"])
    readme = tmp_path / "README.md"
    readme.write_text(f"# Title\n\nintro\n\n{V.START}\nold\n{V.END}\n\nafter\n")
    assert V.main([str(tmp_path), "--readme", str(readme), "--check"]) == 1  # "old" is not what the records give
    assert V.main([str(tmp_path), "--readme", str(readme)]) == 0
    text = readme.read_text()
    assert text.startswith("# Title\n\nintro\n\n") and text.endswith(f"{V.END}\n\nafter\n")
    assert "| d | `valid` | dens | +0.0983 [" in text and "better" in text
    assert "CNSDiff is better than the best other method in 1, level in 0, worse in 0" in text
    # rns has the higher test mean, though validation named DENS: the block says so, and verdict.md lists it
    assert recall["above"] == "rns 0.4000 (3 seeds)" and ndcg["above"] == "rns 0.2000 (3 seeds)"
    assert "In 1 of the 1 `better` comparison(s) another method, not the one validation named best, has a higher " \
           "mean OOD test Recall@20" in text and "better (a higher mean here: rns 0.4000 (3 seeds))" in text
    assert V.main([str(tmp_path), "--readme", str(readme), "--check"]) == 0
    table = (tmp_path / "verdict.md").read_text()
    assert "| d | valid | cns | dens | Recall@20 |" in table and "| better | rns 0.4000 (3 seeds) |" in table
    changed = text.replace("+0.0983", "+0.0984", 1)  # one digit
    readme.write_text(changed)
    assert V.main([str(tmp_path), "--readme", str(readme), "--check"]) == 1


def test_the_loss_family_against_rns_and_the_best_other_method(tmp_path):
    values = {"cns": {1: 0.30, 2: 0.31, 3: 0.32}, "dens": {1: 0.20, 2: 0.215, 3: 0.22},
              "rns": {1: 0.19, 2: 0.20, 3: 0.21, 4: 0.20, 5: 0.20}, "sl": {1: 0.40, 2: 0.42, 3: 0.41},
              "bsl": {1: 0.20, 2: 0.21, 3: 0.19}}
    methods = {"rns": {"keys": {"negative.sampler": "rns"}}, "cns": {"keys": {}},  # cns: the base config's sampler
               "dens": {"keys": {"negative.sampler": "dens"}},
               "sl": {"keys": {"negative.sampler": "rns", "loss.name": "softmax"}},
               "bsl": {"keys": {"negative.sampler": "rns", "loss.name": "bsl", "params.bsl.tau1": 0.1}}}
    _grid(tmp_path, values, {"d/valid": "dens"}, deferred=["sl", "bsl"], methods=methods)
    records = V.loss_changes(tmp_path)
    found = {(r["method"], r["other"], r["metric"]): r for r in records}
    assert sorted({(m, o, r["change"]) for (m, o, _), r in found.items()}) == [
        ("bsl", "dens", "loss vs best"), ("bsl", "rns", "loss"), ("cns", "rns", "method"),
        ("dens", "rns", "method"), ("sl", "dens", "loss vs best"), ("sl", "rns", "loss")]
    sl = found[("sl", "rns", "Recall@20")]  # paired on the 3 seeds both have, not on rns's 5
    d = np.array([0.21, 0.22, 0.20])
    assert sl["n"] == 3 and sl["paired"] and sl["diff"] == pytest.approx(0.21)
    assert sl["low"] == pytest.approx(d.mean() - stats.t.ppf(0.975, 2) * d.std(ddof=1) / math.sqrt(3))
    assert sl["word"] == "better" and sl["other_mean"] == pytest.approx(0.20)
    assert found[("bsl", "rns", "Recall@20")]["word"] == "level"
    assert found[("bsl", "dens", "NDCG@20")]["diff"] == pytest.approx((0.60 - 0.635) / 3 / 2)
    assert V.main([str(tmp_path)]) == 0
    text = (tmp_path / "losses.md").read_text()
    assert "- a loss instead of BPR on the same negatives minus them with BPR (RNS + BPR for RNS negatives; " \
           "for another sampler's, its BPR row): 2 of 2 with an interval: better 1, level 1, worse 0." in text
    assert "negatives instead of uniform ones" not in text  # no deferred row on another sampler's negatives
    assert "| d | valid | sl | dens | Recall@20 | 3 / 3 (3 paired) |" in text
    assert len(list(csv.DictReader((tmp_path / "losses.csv").open()))) == 12
    plain = tmp_path / "plain"
    plain.mkdir()
    _grid(plain, values, {"d/valid": "dens"}, methods=methods)  # no deferred methods: no loss comparison
    assert V.loss_changes(plain) == [] and V.main([str(plain)]) == 0 and not (plain / "losses.md").exists()


def test_no_power_section_or_no_markers_is_a_clear_error(tmp_path, caplog):
    _grid(tmp_path, {"cns": {1: 0.3, 2: 0.3}}, {})
    manifest = json.loads((tmp_path / "grid.json").read_text())
    readme = tmp_path / "README.md"
    readme.write_text("no markers\n")
    with caplog.at_level("ERROR"):
        assert V.main([str(tmp_path), "--readme", str(readme)]) == 2
    assert "needs one `<!-- verdict:start -->` line" in caplog.text and readme.read_text() == "no markers\n"
    records = V.verdicts(tmp_path)
    assert all(V.shown(r) == "best other not named yet" for r in records)
    # the progress line of every table of the grid counts the columns whose best other is not named yet
    assert provenance(tmp_path).progress.startswith("**Interim**") and \
        provenance(tmp_path).progress.endswith("the best other method of 1 column(s) is not named yet.")
    del manifest["power"]
    (tmp_path / "grid.json").write_text(json.dumps(manifest))
    caplog.clear()
    with caplog.at_level("ERROR"):
        assert V.main([str(tmp_path)]) == 2
    assert "has no `power` section" in caplog.text


def test_the_readme_answer_is_what_the_committed_records_give():
    results = REPO / "results" / "grids" / "main"
    if not (results / "grid.json").is_file():
        pytest.skip("no committed main grid")
    assert V.main([str(results), "--readme", str(REPO / "README.md"), "--check"]) == 0


def test_a_softmax_loss_on_cnsdiffs_negatives_against_its_twins(tmp_path):
    """sl-cns (SL on CNSDiff's negatives) is compared with SL on RNS's (the negatives changed), with CNSDiff's own
    BPR row of the same preset (the loss changed, not the other preset's) and with the best other method."""
    values = {"cns": {1: 0.30, 2: 0.31, 3: 0.32}, "cns-paper": {1: 0.1, 2: 0.1, 3: 0.1},
              "dens": {1: 0.20, 2: 0.215, 3: 0.22}, "rns": {1: 0.19, 2: 0.20, 3: 0.21},
              "sl": {1: 0.40, 2: 0.42, 3: 0.41}, "sl-cns": {1: 0.41, 2: 0.425, 3: 0.43},
              "psl": {1: 0.4, 2: 0.4, 3: 0.4}, "psl-cns": {1: 0.4, 2: 0.4, 3: 0.4}}
    methods = {"rns": {"keys": {"negative.sampler": "rns"}},
               "cns-paper": {"keys": {"negative.sampler": "cnsdiff", "params.cnsdiff.preset": "paper"}},
               "cns": {"keys": {"negative.sampler": "cnsdiff", "params.cnsdiff.preset": "official"}},
               "dens": {"keys": {"negative.sampler": "dens"}},
               "sl": {"keys": {"negative.sampler": "rns", "loss.name": "softmax"}},
               # the shorthand params.FIELD is the active sampler's: the official preset, as `cns`
               "sl-cns": {"keys": {"negative.sampler": "cnsdiff", "params.preset": "official", "loss.name": "softmax"}},
               "psl": {"keys": {"negative.sampler": "rns", "loss.name": "psl", "params.psl.activation": "tanh"}},
               # another surrogate than psl's: not its uniform twin
               "psl-cns": {"keys": {"negative.sampler": "cnsdiff", "params.cnsdiff.preset": "official",
                                    "loss.name": "psl", "params.psl.activation": "relu"}}}
    deferred = ["sl", "sl-cns", "psl", "psl-cns"]
    _grid(tmp_path, values, {"d/valid": "dens"}, deferred=deferred, methods=methods)
    found = {(r["method"], r["other"], r["change"]) for r in V.loss_changes(tmp_path)}
    assert found == {("sl", "rns", "loss"), ("sl-cns", "cns", "loss"), ("sl-cns", "sl", "negatives"),
                     ("psl", "rns", "loss"), ("psl-cns", "cns", "loss"),
                     ("dens", "rns", "method"), ("cns", "rns", "method"), ("sl", "dens", "loss vs best"),
                     ("sl-cns", "dens", "loss vs best"), ("psl", "dens", "loss vs best"),
                     ("psl-cns", "dens", "loss vs best")}
    negatives = next(r for r in V.loss_changes(tmp_path) if r["change"] == "negatives" and r["metric"] == "Recall@20")
    assert negatives["diff"] == pytest.approx(0.035 / 3) and negatives["paired"] and negatives["n"] == 3
    assert V.main([str(tmp_path)]) == 0
    assert "- a sampler's negatives instead of uniform ones under the same loss (a deferred row on another sampler's " \
           "negatives minus the same loss on RNS's): 1 of 1 with an interval:" in (tmp_path / "losses.md").read_text()
    methods.pop("cns")  # no BPR row of that preset (the other preset's is not its twin): no loss comparison
    (tmp_path / "out").mkdir()
    _grid(tmp_path / "out", {k: v for k, v in values.items() if k != "cns"}, {"d/valid": "dens"},
          deferred=deferred, methods=methods)
    assert {r["other"] for r in V.loss_changes(tmp_path / "out") if r["method"] == "sl-cns"} == {"sl", "dens"}


def _rec(dataset, protocol, method, metric, other, diff=None, low=None, high=None, boot=None, mean=0.3, n=10):
    """A verdict record as bench.verdict makes one (an interval when diff is given)."""
    rec = {"dataset": dataset, "protocol": protocol, "method": method, "other": other, "metric": metric,
           "seeds": n, "other_seeds": n, "mean": mean, "other_mean": None if diff is None else mean - diff}
    if diff is not None:
        word = "better" if low > 0 else "worse" if high < 0 else "level"
        blow, bhigh = boot or (low, high)
        rec.update({"n": n, "paired": True, "diff": diff, "low": low, "high": high, "boot_low": blow,
                    "boot_high": bhigh, "word": word,
                    "boot_word": "better" if blow > 0 else "worse" if bhigh < 0 else "level"})
    return rec


def test_the_readmes_bullets_say_per_dataset_what_the_intervals_show():
    records = [
        {**_rec("food", "valid", "cns", "Recall@20", "dens", 0.002, -0.001, 0.005, boot=(0.0005, 0.004)),
         "above": "ahns 0.3100 (5 seeds)"},
        _rec("food", "valid", "cns", "NDCG@20", "dens", -0.002, -0.003, -0.001),
        {**_rec("food", "ood_valid", "cns", "Recall@20", "pns", -0.02, -0.03, -0.01, mean=0.05),
         "above": "dns 0.0600 (3 seeds)"},  # not shown: the word is worse
        _rec("food", "ood_valid", "cns", "NDCG@20", "pns", -0.01, -0.02, -0.005),
        _rec("mine", "valid", "cns", "Recall@20", None), _rec("mine", "valid", "cns", "NDCG@20", None),
        _rec("mine", "ood_valid", "cns", "Recall@20", "ease"), _rec("mine", "ood_valid", "cns", "NDCG@20", "ease"),
    ]
    food, mine = V.dataset_bullets(records)
    assert food == ("- **food** (the paper's own dataset): under `valid` against dens: `cns` 0.3000 vs 0.2980 over 10 "
                    "pairs, +0.0020 [-0.0010, +0.0050] level (width 0.0060; NDCG@20 worse; bootstrap better; a higher "
                    "mean here: ahns 0.3100 (5 seeds)); under "
                    "`ood_valid` against pns: `cns` 0.0500 vs 0.0700 over 10 pairs, -0.0200 [-0.0300, -0.0100] worse. "
                    "CNSDiff: better in 0, level in 1, worse in 1 of 2 with an interval.")
    assert mine == ("- **mine**: under `valid` the best other method is not named yet; under `ood_valid` against ease: "
                    "`cns` no interval yet. CNSDiff: no interval yet.")


def test_a_higher_mean_is_against_the_mean_shown_and_unpaired_seeds_say_so(tmp_path):
    # cns has 5 seeds, dens the first 3: the shown means are over the 3 pairs (cns 0.30), cns's own 5-seed mean is
    # 0.26; x (0.27) lies between them and is not above the mean shown
    values = {"cns": {1: 0.29, 2: 0.30, 3: 0.31, 4: 0.20, 5: 0.20}, "dens": {1: 0.28, 2: 0.28, 3: 0.29},
              "x": {1: 0.27, 2: 0.27, 3: 0.27}, "y": {1: 0.33, 2: 0.35, 3: 0.34}}
    _grid(tmp_path, values, {"d/valid": "dens"})
    recall = next(r for r in V.verdicts(tmp_path) if r["metric"] == "Recall@20")
    assert recall["mean"] == pytest.approx(0.30) and recall["n"] == 3 and recall["above"] == "y 0.3400 (3 seeds)"
    unpaired = tmp_path / "unpaired"
    unpaired.mkdir()
    _grid(unpaired, {"cns": {1: 0.30, 2: 0.31, 3: 0.32, 4: 0.30}, "dens": {11: 0.20, 12: 0.21}}, {"d/valid": "dens"})
    (bullet,) = V.dataset_bullets(V.verdicts(unpaired))
    assert "`cns` 0.3075 vs 0.2050 over 4 / 2 seeds (unpaired), +0.1025 [" in bullet
