"""The verdict with its intervals: python -m bench.verdict RESULTS_DIR [--out DIR] [--readme README.md [--check]]

Per dataset x protocol column of a grid with a `power` section (grid.json names the best other method of each
column, chosen on first-seed validation, never on a test file): each method under test minus the best other
method on test_ood Recall@20 and NDCG@20 at each run's protocol-reported epoch, with a 95% confidence interval
over seeds: a t interval on the paired differences where the seeds pair (Welch's where they do not) and a
percentile bootstrap beside it. The verdict word comes from the t interval: `better` (above 0), `level` (it
contains 0; its width is given), `worse` (below 0).

A grid with `deferred` methods (main's loss family, docs/losses.md) also gets losses.md and losses.csv: per column,
every deferred method minus the same negatives trained with BPR (`rns` for RNS negatives: the loss changed), a
deferred row on another sampler's negatives minus the same loss on RNS's (the negatives changed), the best other
method and each method under test minus `rns` (the sampler changed), and each deferred method minus the best other
method, with the same intervals.

Writes verdict.md and verdict.csv to --out (default RESULTS_DIR). With --readme FILE, also writes the answer
block between FILE's `<!-- verdict:start -->` and `<!-- verdict:end -->` lines; with --check as well, writes
nothing and exits 1 when that block differs from what the records give (tests/test_verdict.py runs it on the
committed records).
"""
from __future__ import annotations

import argparse
import csv
import io
import logging
import math
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
from scipy import stats

from bench.records import read_manifest, resolved_keys
from bench.table import collect, grid_file, provenance
from conf.config import repo_relative
from util.io import atomic_write_text
from util.typing_coerce import ConfigError

log = logging.getLogger("bench.verdict")
METRICS = ("Recall@20", "NDCG@20")
FILE = "test_ood"  # what the verdict is about: the OOD test part each protocol reports on
LEVEL = 0.95
BOOTSTRAP = 10000  # resamples
BOOTSTRAP_SEED = 20250101
START, END = "<!-- verdict:start -->", "<!-- verdict:end -->"
BASE = "rns"  # the loss comparison's reference row: RNS negatives, BPR
# the CNSDiff paper's own datasets among the presets (its KuaiRec training split is not published): the README's
# bullets name them as such
PAPER_DATASETS = ("food", "yelp2018")


@dataclass
class Interval:
    """A difference of means with its 95% t and bootstrap intervals over seeds."""

    n: int  # pairs (paired) or the smaller group (unpaired)
    paired: bool
    diff: float  # the mean difference
    low: float
    high: float
    boot_low: float
    boot_high: float

    @property
    def word(self) -> str:
        """better (the t interval above 0), worse (below 0) or level (it contains 0)."""
        return "better" if self.low > 0 else "worse" if self.high < 0 else "level"

    @property
    def boot_word(self) -> str:
        """The same word from the bootstrap interval."""
        return "better" if self.boot_low > 0 else "worse" if self.boot_high < 0 else "level"


def interval(mine: dict[int, float], other: dict[int, float]) -> Optional[Interval]:
    """mine minus other over seeds: paired on the seeds both have (at least two), else Welch's interval over each
    side's seeds (at least two each); None when neither is possible. A side without spread (a method fitted in
    closed form, the same every seed) is fine; both without spread give a zero-width interval."""
    common = sorted(set(mine) & set(other))
    rng = np.random.default_rng(BOOTSTRAP_SEED)
    if len(common) >= 2:
        d = np.array([mine[s] - other[s] for s in common])
        n, mean = len(d), float(d.mean())
        half = float(stats.t.ppf(0.5 + LEVEL / 2, n - 1) * d.std(ddof=1) / math.sqrt(n))
        boots = d[rng.integers(0, n, size=(BOOTSTRAP, n))].mean(axis=1)
        return Interval(n, True, mean, mean - half, mean + half, *_percentiles(boots))
    a, b = np.array(list(mine.values())), np.array(list(other.values()))
    if len(a) < 2 or len(b) < 2:
        return None
    va, vb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
    mean = float(a.mean() - b.mean())
    if va + vb == 0:
        return Interval(min(len(a), len(b)), False, mean, mean, mean, mean, mean)
    dof = (va + vb) ** 2 / (va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1))
    half = float(stats.t.ppf(0.5 + LEVEL / 2, dof) * math.sqrt(va + vb))
    boots = (a[rng.integers(0, len(a), size=(BOOTSTRAP, len(a)))].mean(axis=1)
             - b[rng.integers(0, len(b), size=(BOOTSTRAP, len(b)))].mean(axis=1))
    return Interval(min(len(a), len(b)), False, mean, mean - half, mean + half, *_percentiles(boots))


def _percentiles(values: np.ndarray) -> tuple[float, float]:
    tail = (1 - LEVEL) / 2 * 100
    low, high = np.percentile(values, [tail, 100 - tail])
    return float(low), float(high)


def verdicts(results: Path, data: Optional[dict[str, Any]] = None) -> list[dict[str, Any]]:
    """One record per dataset, protocol, method under test and metric: the best other method, the seeds of both,
    their means and the interval of the difference (from `data`, bench.table.collect's, read when not given). A
    ConfigError for a grid without `power`."""
    manifest = read_manifest(results)
    power = manifest.get("power")
    if not power:
        raise ConfigError(f"{results}/grid.json has no `power` section (the grid file's `power` names the methods "
                          f"under test; a dry run of the grid writes it)")
    data = collect(results) if data is None else data
    apart = {*power["methods"], *(manifest.get("deferred") or [])}  # not "another method", nor is the best other
    out = []
    for dataset in manifest["datasets"]:
        for protocol in manifest["protocols"]:
            other = power["best_other"].get(f"{dataset}/{protocol}")
            methods = data.get(protocol, {}).get(dataset, {})
            for method in power["methods"]:
                for metric in METRICS:
                    rec = _compare(dataset, protocol, method, other, metric, methods)
                    rec["above"] = _above(rec["mean"], metric,
                                          {m: e for m, e in methods.items() if m not in apart and m != other})
                    out.append(rec)
    return out


def _above(mean: Optional[float], metric: str, others: dict[str, Any]) -> str:
    """The methods of `others` whose mean test `metric` over their own seeds exceeds `mean` (a record's, the one its
    text shows), highest first, as `name mean (n seeds)` joined by commas: a fact on the test file, not a choice (the
    best other method stays the one named on validation)."""
    if mean is None:
        return ""
    higher = []
    for name, entry in others.items():
        values = list(_values(entry, metric).values())
        theirs = float(np.mean(values)) if values else None
        if theirs is not None and theirs > mean:
            higher.append((theirs, name, len(values)))
    return ", ".join(f"{name} {_mean(value)} ({n} seeds)" for value, name, n in sorted(higher, reverse=True))


def _compare(dataset: str, protocol: str, method: str, other: Optional[str], metric: str,
             methods: dict[str, Any]) -> dict[str, Any]:
    """One record: method minus other on test_ood `metric` in a column, with both sides' seeds and means (over the
    pairs where the seeds pair) and the interval where there is one."""
    rec: dict[str, Any] = {"dataset": dataset, "protocol": protocol, "method": method, "other": other,
                           "metric": metric}
    mine = _values(methods.get(method), metric)
    theirs = _values(methods.get(other), metric) if other else {}
    common = sorted(set(mine) & set(theirs))
    if len(common) >= 2:  # paired: both means over the seeds the difference is taken over
        shown_mine, shown_theirs = [mine[s] for s in common], [theirs[s] for s in common]
    else:
        shown_mine, shown_theirs = list(mine.values()), list(theirs.values())
    rec.update({"seeds": len(mine), "other_seeds": len(theirs),
                "mean": float(np.mean(shown_mine)) if shown_mine else None,
                "other_mean": float(np.mean(shown_theirs)) if shown_theirs else None})
    found = interval(mine, theirs) if mine and theirs else None
    if found is not None:
        rec.update({**asdict(found), "word": found.word, "boot_word": found.boot_word})
    return rec


def loss_changes(results: Path, data: Optional[dict[str, Any]] = None) -> list[dict[str, Any]]:
    """The loss family against the samplers, per column and metric: each deferred method minus the same negatives
    trained with BPR (`loss`; RNS + BPR, `rns`, for RNS negatives), a deferred row with another sampler's negatives
    minus the same loss on RNS negatives (`negatives`), the best other method and each method under test minus
    RNS + BPR (`method`), then each deferred method minus the best other method (`loss vs best`); [] for a grid
    without `deferred` methods."""
    manifest = read_manifest(results)
    deferred = manifest.get("deferred") or []
    if not deferred:
        return []
    power = manifest.get("power") or {}
    data = collect(results) if data is None else data
    keys = {name: resolved_keys((spec or {}).get("keys") or {}) for name, spec in (manifest.get("methods") or {}).items()}
    twins: list[tuple[str, Optional[str], str]] = []  # the same in every column
    for method in deferred:
        for base, change in ((bpr_twin(method, keys, deferred), "loss"), (uniform_twin(method, keys, deferred), "negatives")):
            if base:
                twins.append((method, base, change))
    out = []
    for dataset in manifest["datasets"]:
        for protocol in manifest["protocols"]:
            other = (power.get("best_other") or {}).get(f"{dataset}/{protocol}")
            methods = data.get(protocol, {}).get(dataset, {})
            changed = [*([other] if other else []), *(power.get("methods") or [])]
            pairs = [*twins, *[(m, BASE, "method") for m in changed if m != BASE],
                     *[(m, other, "loss vs best") for m in deferred]]
            for method, base, change in pairs:
                for metric in METRICS:
                    rec = _compare(dataset, protocol, method, base, metric, methods)
                    rec["change"] = change
                    out.append(rec)
    return out


def _fixed(spec: dict[str, Any], owner: str) -> dict[str, Any]:
    """The params.OWNER.* keys of a method's resolved keys."""
    return {k: v for k, v in spec.items() if k.startswith(f"params.{owner}.")}


def bpr_twin(method: str, keys: dict[str, dict[str, Any]], deferred: Sequence[str]) -> Optional[str]:
    """The method that trains the deferred `method`'s negatives with BPR: `rns` for RNS negatives, else the first
    method of the grid (not deferred) with the same model and sampler and the same params.SAMPLER values
    (sl-cnsdiff: cnsdiff-official); None when the grid has none. `keys`: each method's resolved_keys."""
    spec = keys[method]
    sampler = spec["negative.sampler"]
    if sampler == "rns":
        return BASE
    return next((name for name, other in keys.items() if name not in deferred and other["loss.name"] == "bpr"
                 and (other["model.name"], other["negative.sampler"]) == (spec["model.name"], sampler)
                 and _fixed(other, sampler) == _fixed(spec, sampler)), None)


def uniform_twin(method: str, keys: dict[str, dict[str, Any]], deferred: Sequence[str]) -> Optional[str]:
    """For a deferred row whose negatives are not RNS's, the deferred row with the same loss and loss settings on RNS
    negatives (sl-cnsdiff: sl); None otherwise."""
    spec = keys[method]
    if spec["negative.sampler"] == "rns":
        return None
    loss = spec["loss.name"]
    return next((name for name in deferred if keys[name]["negative.sampler"] == "rns"
                 and keys[name]["loss.name"] == loss and _fixed(keys[name], loss) == _fixed(spec, loss)), None)


def _values(entry: Optional[dict[str, Any]], metric: str) -> dict[int, float]:
    """Per seed, a method's test_ood `metric` at its protocol's reported epoch (collect's rows)."""
    if not entry:
        return {}
    return {int(seed): run["row"][f"{FILE}/{metric}"] for seed, run in entry["runs"].items()
            if f"{FILE}/{metric}" in run["row"]}


def _num(value: Optional[float], digits: int = 4) -> str:
    return "" if value is None else f"{value:+.{digits}f}" if value != 0 else f"{0:.{digits}f}"


def _mean(value: Optional[float]) -> str:
    return "" if value is None else f"{value:.4f}"


def shown(rec: dict[str, Any]) -> str:
    """A difference as the README shows it: `+0.0012 [-0.0003, +0.0027] level (width 0.0030)`."""
    return f"{_diff(rec)} {_word(rec)}" if "word" in rec else _word(rec)


def markdown(records: list[dict[str, Any]], results: Path) -> str:
    """verdict.md: every interval, t and bootstrap, with both sides' means and seeds."""
    made = provenance(results)
    progress = made.progress
    grid = grid_file(read_manifest(results))
    lines = [f"## The verdict with its intervals (grid `{read_manifest(results)['grid']}`)", "", progress, "",
             f"Made by `python -m bench.verdict {repo_relative(results.resolve())}` from the run records (runs by "
             f"`python -m bench.grid {grid}` at commit(s) {made.runs}). Per column, each method under test minus the "
             f"best other method (named by first-seed validation, `power.best_other` in grid.json) on {FILE} at "
             f"each run's protocol-reported epoch; 95% intervals over seeds: t on the paired differences (seeds "
             f"pair; Welch where they do not) and a percentile bootstrap ({BOOTSTRAP} resamples). The word comes "
             f"from the t interval: better (above 0), level (contains 0), worse (below 0). The last column lists the "
             f"methods (not under test, not deferred, not the best other) whose mean over their own seeds on the "
             f"same metric is above the method's mean shown: a fact on the test file, not a choice, and without an "
             f"interval.", "",
             "| dataset | protocol | method | best other | metric | seeds (pairs) | method mean | "
             "other mean (over the pairs) | difference [95% t] | 95% bootstrap | verdict | "
             "other methods with a higher mean (seeds) |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    lines += [f"{_row(r)} {r['above']} |" for r in records]
    return "\n".join(lines) + "\n"


def _row(r: dict[str, Any]) -> str:
    """A record's line of verdict.md or losses.md."""
    pairs = f"{r['seeds']} / {r['other_seeds']}" + (f" ({r['n']} paired)" if r.get("paired") else "")
    boot = f"[{_num(r['boot_low'])}, {_num(r['boot_high'])}]" if "word" in r else ""
    if "word" in r and r["boot_word"] != r["word"]:
        boot += f" ({r['boot_word']})"
    return (f"| {r['dataset']} | {r['protocol']} | {r['method']} | {r['other'] or ''} | {r['metric']} | {pairs} | "
            f"{_mean(r['mean'])} | {_mean(r['other_mean'])} | {_diff(r)} | {boot} | {_word(r)} |")


def loss_markdown(records: list[dict[str, Any]], results: Path) -> str:
    """losses.md: the loss family against the samplers, a count of the words on Recall@20, then every interval."""
    made = provenance(results)
    manifest = read_manifest(results)
    recall = [r for r in records if r["metric"] == "Recall@20"]
    kinds = {"loss": "a loss instead of BPR on the same negatives minus them with BPR (RNS + BPR for RNS negatives; "
                     "for another sampler's, its BPR row)",
             "negatives": "a sampler's negatives instead of uniform ones under the same loss (a deferred row on "
                          "another sampler's negatives minus the same loss on RNS's)",
             "method": "another method instead of RNS + BPR (the best other method, each method under test) minus "
                       "RNS + BPR",
             "loss vs best": "a loss instead of BPR (a deferred row) minus the best other method"}
    lines = [f"## Changing the loss or the sampler (grid `{manifest['grid']}`)", "", made.progress, "",
             f"Made by `python -m bench.verdict {repo_relative(results.resolve())}` from the run records (runs by "
             f"`python -m bench.grid {grid_file(manifest)}` at commit(s) {made.runs}). On {FILE} at each "
             f"run's protocol-reported epoch; 95% intervals over seeds as in verdict.md (t on the paired differences, "
             f"a percentile bootstrap beside it); the word from the t interval. `{BASE}` is the study's RNS row "
             f"(BPR); the best other method is the verdict's, named by first-seed validation among the methods that "
             f"train with BPR (and the simple baselines), never among the deferred losses.", "",
             "Counts on Recall@20 (comparisons with an interval):", ""]
    for kind, what in kinds.items():
        chosen = [r for r in recall if r["change"] == kind]
        if not chosen:
            continue
        words = [r["word"] for r in chosen if "word" in r]
        lines.append(f"- {what}: {len(words)} of {len(chosen)} with an interval: better {words.count('better')}, "
                     f"level {words.count('level')}, worse {words.count('worse')}.")
    lines += ["", "| dataset | protocol | method | minus | metric | seeds (pairs) | method mean | "
              "other mean (over the pairs) | difference [95% t] | 95% bootstrap | verdict |",
              "|---|---|---|---|---|---|---|---|---|---|---|"]
    lines += [_row(r) for r in records]
    return "\n".join(lines) + "\n"


def _diff(rec: dict[str, Any]) -> str:
    """The difference and its t interval, or nothing."""
    return f"{_num(rec['diff'])} [{_num(rec['low'])}, {_num(rec['high'])}]" if "word" in rec else ""


def _width(rec: dict[str, Any]) -> str:
    """`width W`: the width of a record's t interval."""
    return f"width {rec['high'] - rec['low']:.4f}"


def _tally(words: list[str]) -> str:
    """`better in B, level in L, worse in W`: a count of verdict words."""
    return f"better in {words.count('better')}, level in {words.count('level')}, worse in {words.count('worse')}"


def _word(rec: dict[str, Any]) -> str:
    """The verdict word (with the interval's width when level), or why there is none."""
    if "word" not in rec:
        return "no interval yet" if rec.get("other") else "best other not named yet"
    return f"{rec['word']} ({_width(rec)})" if rec["word"] == "level" else rec["word"]


def answer_block(records: list[dict[str, Any]], results: Path) -> str:
    """The README's answer, short: how far the grid is, a count of the verdict words, and one row per dataset x
    protocol column with each method's difference on OOD test Recall@20 and its word, then one bullet per dataset
    (dataset_bullets: the means, and the NDCG@20 and bootstrap words where they differ; the rest is in verdict.md)."""
    made = provenance(results)
    name = read_manifest(results)["grid"]
    recall = [r for r in records if r["metric"] == "Recall@20"]
    decided = [r for r in recall if "word" in r]
    counts = {w: sum(r["word"] == w for r in decided) for w in ("better", "level", "worse")}
    methods = list(dict.fromkeys(r["method"] for r in records))
    columns = list(dict.fromkeys((r["dataset"], r["protocol"]) for r in records))
    lines = [made.progress, "", f"Of {len(recall)} comparisons on OOD test Recall@20 ({len(methods)} CNSDiff presets x "
             f"{len(columns)} dataset/protocol columns), {len(decided)} have an interval: CNSDiff is better than the "
             f"best other method in {counts['better']}, level in {counts['level']}, worse in {counts['worse']}."
             + _caveat(decided), "",
             "| dataset | protocol | best other | " + " | ".join(f"{m} minus it [95% CI]" for m in methods) + " |",
             "|---|---|---|" + "---|" * len(methods)]
    for dataset, protocol in columns:
        rows = {(r["method"], r["metric"]): r for r in records if (r["dataset"], r["protocol"]) == (dataset, protocol)}
        other = next(iter(rows.values()))["other"] or "not named yet"
        cells = [shown(rows[(m, "Recall@20")]) for m in methods]
        lines.append(f"| {dataset} | `{protocol}` | {other} | " + " | ".join(cells) + " |")
    lines += ["", "Per dataset, on OOD test Recall@20: each preset's mean against the best other method's (over the "
              "seeds they pair on, else each over its own), the difference with its 95% t interval and word, the "
              "NDCG@20 word and the bootstrap's where they differ from it, and, unless it is worse, the other "
              "methods with a higher mean on the same file than the preset's shown (each over its own seeds, no "
              "interval; not the best other, which validation named):", ""]
    lines += dataset_bullets(records)
    lines += ["", f"Generated from the run records by `python -m bench.verdict {repo_relative(results.resolve())} --out "
              f"results/tables/{name} --readme README.md` (runs at {len(made.run_commits)} commit(s), each named in "
              f"its config.json); seeds, NDCG@20, bootstrap intervals and both sides' means: "
              f"[`results/tables/{name}/verdict.md`](results/tables/{name}/verdict.md)."]
    return "\n".join(lines) + "\n"


def _caveat(decided: list[dict[str, Any]]) -> str:
    """The sentence saying in how many `better` comparisons another method has a higher test mean, or nothing."""
    better = [r for r in decided if r["word"] == "better"]
    beaten = sum(bool(r.get("above")) for r in better)
    if not beaten:
        return ""
    return (f" In {beaten} of the {len(better)} `better` comparison(s) another method, not the one validation named "
            f"best, has a higher mean OOD test Recall@20 (over its own seeds; no interval): the bullets below name "
            f"them.")


def dataset_bullets(records: list[dict[str, Any]]) -> list[str]:
    """One README bullet per dataset: per protocol, the best other method with its mean and each method's difference
    on Recall@20 with its word (and where NDCG@20's word or the bootstrap's differs), then the dataset's count of
    words."""
    lines = []
    for dataset in dict.fromkeys(r["dataset"] for r in records):
        mine = [r for r in records if r["dataset"] == dataset]
        parts = []
        for protocol in dict.fromkeys(r["protocol"] for r in mine):
            column = {(r["method"], r["metric"]): r for r in mine if r["protocol"] == protocol}
            recall = [r for (_, metric), r in column.items() if metric == "Recall@20"]
            other = recall[0]["other"]
            if not other:
                parts.append(f"under `{protocol}` the best other method is not named yet")
                continue
            shown_methods = []
            for r in recall:
                if "word" not in r:
                    shown_methods.append(f"`{r['method']}` {_word(r)}")
                    continue
                notes = [_width(r)] if r["word"] == "level" else []
                ndcg = column.get((r["method"], "NDCG@20"), {})
                if "word" in ndcg and ndcg["word"] != r["word"]:
                    notes.append(f"NDCG@20 {ndcg['word']}")
                if r["boot_word"] != r["word"]:
                    notes.append(f"bootstrap {r['boot_word']}")
                if r["word"] != "worse" and r.get("above"):
                    notes.append(f"a higher mean here: {r['above']}")
                over = f"{r['n']} pairs" if r["paired"] else f"{r['seeds']} / {r['other_seeds']} seeds (unpaired)"
                shown_methods.append(f"`{r['method']}` {_mean(r['mean'])} vs {_mean(r['other_mean'])} over {over}, "
                                     f"{_diff(r)} {r['word']}" + (f" ({'; '.join(notes)})" if notes else ""))
            parts.append(f"under `{protocol}` against {other}: " + ", ".join(shown_methods))
        words = [r["word"] for r in mine if r["metric"] == "Recall@20" and "word" in r]
        count = f"{_tally(words)} of {len(words)} with an interval" if words else "no interval yet"
        own = " (the paper's own dataset)" if dataset in PAPER_DATASETS else ""
        lines.append(f"- **{dataset}**{own}: " + "; ".join(parts) + f". CNSDiff: {count}.")
    return lines


def replace_block(text: str, block: str, path: Path) -> str:
    """text with the lines between START and END replaced by block; a ConfigError naming the file without both."""
    if text.count(START) != 1 or text.count(END) != 1 or text.index(START) > text.index(END):
        raise ConfigError(f"{path}: needs one `{START}` line and one `{END}` line after it")
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{START}\n{block}{END}{tail}"


def to_csv(records: Sequence[dict[str, Any]]) -> str:
    """verdict.csv: one row per record."""
    keys = list(dict.fromkeys(k for r in records for k in r))
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=keys)
    writer.writeheader()
    writer.writerows(records)
    return buf.getvalue()


def main(argv: Optional[list[str]] = None) -> int:
    """Command line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("results", type=Path)
    parser.add_argument("--out", type=Path, help="folder for verdict.md and verdict.csv (and losses.md and losses.csv) (default: RESULTS)")
    parser.add_argument("--readme", type=Path, help="also write the answer block into this file's verdict markers")
    parser.add_argument("--check", action="store_true", help="with --readme: write nothing; exit 1 if it differs")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        data = collect(args.results)  # read once for both comparisons
        records = verdicts(args.results, data)
        if args.readme:
            text = args.readme.read_text(encoding="utf-8") if args.readme.is_file() else ""
            wanted = replace_block(text, answer_block(records, args.results), args.readme)
            if args.check:
                if wanted != text:
                    log.error("%s: the verdict block differs from what the records give; run python -m bench.verdict "
                              "%s --readme %s", args.readme, args.results, args.readme)
                    return 1
                return 0
            atomic_write_text(args.readme, wanted)
        elif args.check:
            raise ConfigError("--check needs --readme FILE")
    except ConfigError as exc:
        log.error("error: %s", exc)
        return 2
    out = args.out or args.results
    atomic_write_text(out / "verdict.md", markdown(records, args.results))
    atomic_write_text(out / "verdict.csv", to_csv(records))
    log.info("%s", out / "verdict.md")
    losses = loss_changes(args.results, data)
    if losses:
        atomic_write_text(out / "losses.md", loss_markdown(losses, args.results))
        atomic_write_text(out / "losses.csv", to_csv(losses))
        log.info("%s", out / "losses.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
