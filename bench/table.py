"""Comparison tables of a grid's results: python -m bench.table RESULTS_DIR [--out DIR] [--against OTHER_RESULTS]

RESULTS_DIR is a grid's output folder (it holds grid.json, written by bench.grid). Writes summary.md (test
Recall@20 per method and dataset, one table per protocol), table.md and table.csv: per protocol and
dataset, each method at the hyperparameters its protocol's validation data chose, IID and OOD test metrics
(Recall/NDCG@10/20) as mean ± sample std over seeds at the protocol's selected epoch, the average training
popularity of the recommended top-20 (ARP@20), the change of Recall@20 relative to RNS, the relative
improvement over the best other method (per metric, averaged over the four metrics, as the paper reports
it) with a paired t-test across seeds, the selected epoch of each seed, epochs trained and seconds per
epoch; the best value of each metric column in bold; the false-hard-negative rates at the selected epoch;
and every hyperparameter candidate's validation and test Recall@20 on the first seed (with its OOD ARP@20
and, for CNSDiff, each start step's candidate distance to the positive). With --against OTHER_RESULTS,
also selection.md: each method's test Recall@20 and test_ood rank here against the other grid's
(--against-protocol, default valid), e.g. how much selecting on the test set changes the ranking.
"""
from __future__ import annotations

import argparse
import csv
import io
import json
import os
import platform
import statistics
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np
from scipy import stats

from SELFRec import git_commit
from bench.cells import tag
from bench.protocol import validation_file
from bench.records import read_json, read_manifest, read_rows, selected_index
from conf.config import repo_relative
from data.loader import read_interactions
from data.presets import get_preset
from util.io import atomic_write_text
from util.results import read_status, writer_alive
from util.typing_coerce import ConfigError

FOUR = ("Recall@10", "NDCG@10", "Recall@20", "NDCG@20")
FHN = ("fhn_heldout", "fhn_heldout_base", "fhn_true", "fhn_true_base")
SHORT = {"Recall@10": "R@10", "NDCG@10": "N@10", "Recall@20": "R@20", "NDCG@20": "N@20"}


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for one value)."""
    return statistics.mean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def improvement(mine: dict[str, float], others: dict[str, dict[str, float]]) -> Optional[float]:
    """Relative improvement over the best other method, per metric, averaged over the four metrics."""
    if not others:
        return None
    gains = []
    for metric in FOUR:
        best = max(o[metric] for o in others.values())
        gains.append((mine[metric] - best) / best if best > 0 else 0.0)
    return float(np.mean(gains))


def paired_p(a: dict[int, float], b: dict[int, float]) -> Optional[float]:
    """Two-sided paired t-test p-value over the seeds both have (None below two seeds or no variance)."""
    seeds = sorted(set(a) & set(b))
    if len(seeds) < 2:
        return None
    x, y = np.array([a[s] for s in seeds]), np.array([b[s] for s in seeds])
    if np.allclose(x - y, (x - y)[0]):
        return None
    return float(stats.ttest_rel(x, y).pvalue)


def live_state(results: Path, cell: dict[str, Any]) -> str:
    """A cell's state as grid.json lists it, but `running` where its run is being trained now (status.json running,
    its writer alive): grid.json is written when cells end, so a cell resumed since is listed as interrupted there."""
    if cell["state"] != "finished" and cell.get("run") and writer_alive(read_status(results / cell["run"])):
        return "running"
    return cell["state"]


def grid_file(manifest: dict[str, Any]) -> str:
    """The grid file that made a grid folder, as its grid.json records it (conf/grids/NAME.yaml before it did)."""
    return manifest.get("grid_file") or f"conf/grids/{manifest['grid']}.yaml"


def finished_rows(run: Path) -> list[dict[str, float]]:
    """epochs.csv of a finished run (read_rows); a ConfigError when it is absent or has no epoch."""
    rows = read_rows(run)
    if not rows:
        raise ConfigError(f"{run / 'epochs.csv'}: absent or without an epoch, in a run grid.json lists as finished; "
                          f"restore it, or move the run folder away and run the cell again")
    return rows


def collect(results: Path) -> dict[str, Any]:
    """Per protocol, dataset and method: per-seed values at the selected epoch of the chosen candidate."""
    manifest = read_manifest(results)
    out: dict[str, Any] = {}
    for protocol in manifest["protocols"]:
        for key, chosen in manifest["choices"].items():
            dataset, method = key.split("/", 1)
            candidate = chosen.get(protocol)
            if candidate is None:
                continue
            runs = {}
            for cell in manifest["cells"]:
                if (cell["dataset"], cell["method"], cell["candidate"]) != (dataset, method, candidate):
                    continue
                if cell["state"] != "finished" or cell["run"] is None:
                    continue
                run = results / cell["run"]
                rows = finished_rows(run)
                index = selected_index(rows, protocol, run)
                row = rows[index]
                # the best Recall@20 of each test file over all epochs (an oracle, for reading)
                peak = {f: max(r[f"{f}/Recall@20"] for r in rows) for f in ("test_iid", "test_ood")
                        if all(f"{f}/Recall@20" in r for r in rows)}
                runs[cell["seed"]] = {"row": row, "rows": rows, "epochs": len(rows), "epoch": index + 1, "peak": peak,
                                      "sec": statistics.median(r.get("train_s", 0) + r.get("sample_s", 0) for r in rows)}
            if runs:
                out.setdefault(protocol, {}).setdefault(dataset, {})[method] = {"candidate": candidate, "runs": runs}
    return out


def candidates(results: Path) -> list[dict[str, Any]]:
    """Every hyperparameter candidate of methods that had more than one, on the seed all candidates ran with
    (the first): its validation Recall@20 (what chose) and test Recall@20 at each protocol's selected epoch."""
    manifest = read_manifest(results)
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for cell in manifest["cells"]:
        groups.setdefault((cell["dataset"], cell["method"]), []).append(cell)
    records = []
    for (dataset, method), cells in groups.items():
        seeds_by_tag: dict[str, set[int]] = {}
        for c in cells:
            seeds_by_tag.setdefault(tag(c["candidate"]), set()).add(c["seed"])
        if len(seeds_by_tag) < 2:
            continue
        common = set.intersection(*seeds_by_tag.values())
        if not common:
            continue
        seed = min(common)
        for cell in cells:
            if cell["seed"] != seed:
                continue
            for protocol in manifest["protocols"]:
                rec = {"protocol": protocol, "dataset": dataset, "method": method, "candidate": cell["candidate"],
                       "seed": seed, "state": live_state(results, cell),
                       "chosen": manifest["choices"].get(f"{dataset}/{method}", {}).get(protocol) == cell["candidate"]}
                if cell["state"] == "finished" and cell["run"]:
                    run = results / cell["run"]
                    rows = finished_rows(run)
                    index = selected_index(rows, protocol, run)
                    validation = validation_file(protocol)
                    row = rows[index]
                    rec.update({"epoch": index + 1, "epochs": len(rows),
                                "validation": row.get(f"{validation}/Recall@20"),
                                **{f: row.get(f"{f}/Recall@20") for f in ("test_iid", "test_ood")},
                                "arp_ood": row.get("test_ood/ARP@20"),
                                # CNSDiff: how far each start step's candidate is from the positive
                                "distance": {k[len("dist_"):]: v for k, v in row.items() if k.startswith("dist_s")}})
                records.append(rec)
    order = {p: i for i, p in enumerate(manifest["protocols"])}
    return sorted(records, key=lambda r: (order[r["protocol"]], r["dataset"], r["method"]))


def candidates_markdown(records: list[dict[str, Any]]) -> str:
    """The candidates table: what each hyperparameter value gave on validation and on the tests."""
    if not records:
        return ""
    distances = any(r.get("distance") for r in records)
    out = ["## Every candidate (first seed)", "",
           "The chosen candidate (bold) has the best validation Recall@20 of its protocol; the test columns are "
           "shown for reading only, they never choose. OOD ARP@20: mean training popularity of the recommended "
           "top-20 on test_ood." + (" Candidate distance: CNSDiff's mean relative distance |candidate - positive| "
                                    "/ |positive| per start step s, at the selected epoch." if distances else ""), "",
           "| protocol | dataset | method | candidate | state | selected epoch / trained | validation R@20 | "
           "IID R@20 | OOD R@20 | OOD ARP@20 |" + (" candidate distance |" if distances else ""),
           "|---|---|---|---|---|---|---|---|---|---|" + ("---|" if distances else "")]
    for r in records:
        name = _candidate(r["candidate"])
        cells = [r["protocol"], r["dataset"], r["method"], f"**{name}**" if r["chosen"] else name, r["state"],
                 f"{r['epoch']} / {r['epochs']}" if "epoch" in r else "", _fmt(r.get("validation")),
                 _fmt(r.get("test_iid")), _fmt(r.get("test_ood")), _fmt(r.get("arp_ood"), 1)]
        if distances:
            cells.append(", ".join(f"{k} {float(v):.3f}" for k, v in (r.get("distance") or {}).items()))
        out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out) + "\n"


def summarize(data: dict[str, Any]) -> list[dict[str, Any]]:
    """One record per protocol, dataset, method and test file with means, stds and comparisons."""
    records = []
    for protocol, datasets in data.items():
        for dataset, methods in datasets.items():
            files = [f for f in ("test_iid", "test_ood") if any(f"{f}/Recall@20" in r["row"]
                     for m in methods.values() for r in m["runs"].values())]
            means: dict[str, dict[str, dict[str, float]]] = {}
            per_seed: dict[str, dict[str, dict[int, float]]] = {}
            for method, m in methods.items():
                for f in files:
                    means.setdefault(f, {})[method] = {k: statistics.mean(r["row"][f"{f}/{k}"] for r in m["runs"].values())
                                                       for k in FOUR}
                    per_seed.setdefault(f, {})[method] = {s: float(np.mean([r["row"][f"{f}/{k}"] for k in FOUR]))
                                                          for s, r in m["runs"].items()}
            for method, m in methods.items():
                for f in files:
                    runs = m["runs"].values()
                    rec = {"protocol": protocol, "dataset": dataset, "method": method, "file": f,
                           "candidate": m["candidate"], "seeds": len(m["runs"]),
                           "epochs": statistics.mean(r["epochs"] for r in runs),
                           "selected_epochs": " ".join(str(m["runs"][s]["epoch"]) for s in sorted(m["runs"])),
                           "sec_per_epoch": statistics.mean(r["sec"] for r in runs)}
                    for k in FOUR + ("ARP@20",):
                        values = [r["row"].get(f"{f}/{k}") for r in runs]
                        if all(v is not None for v in values):
                            rec[k], rec[k + "_std"] = mean_std(values)
                    others = {o: v for o, v in means[f].items() if o != method}
                    peaks = [r["peak"].get(f) for r in runs]
                    if all(v is not None for v in peaks):
                        rec["peak_R@20"] = statistics.mean(peaks)
                    rec["improvement"] = improvement(means[f][method], others)
                    if others:
                        best_other = max(others, key=lambda o: others[o]["Recall@20"])
                        rec["vs"] = best_other
                        rec["p_value"] = paired_p(per_seed[f][method], per_seed[f][best_other])
                    if "rns" in means[f] and means[f]["rns"]["Recall@20"] > 0:
                        rec["vs_rns_R@20"] = means[f][method]["Recall@20"] / means[f]["rns"]["Recall@20"] - 1
                    for k in FHN:
                        values = [r["row"][k] for r in runs if k in r["row"]]
                        if values:
                            rec[k] = statistics.mean(values)
                    records.append(rec)
    return records


def _spearman(pairs: list[tuple[float, float]]) -> Optional[tuple[float, float, int]]:
    """Spearman's rho, its p-value and the number of pairs; None below three pairs."""
    if len(pairs) < 3:
        return None
    result = stats.spearmanr([p[0] for p in pairs], [p[1] for p in pairs])
    return float(result.statistic), float(result.pvalue), len(pairs)


def fhn_correlation(records: list[dict[str, Any]], rate: str = "fhn_heldout") -> Optional[tuple[float, float, int]]:
    """Spearman's rho (and its p-value) across methods between the FHN lift over chance (rate / its chance
    level) at the selected epoch and test_ood Recall@20; None below three methods with both."""
    return _spearman([(r[rate] / r[rate + "_base"], r["Recall@20"]) for r in records
                      if r["file"] == "test_ood" and r.get(rate) is not None and r.get(rate + "_base")
                      and "Recall@20" in r])


def popularity_correlation(records: list[dict[str, Any]]) -> Optional[tuple[float, float, int]]:
    """Spearman's rho (and its p-value) across the trained samplers (the methods with an FHN probe) between the
    popularity of their OOD recommendations (ARP@20) and test_ood Recall@20; None below three such methods."""
    return _spearman([(r["ARP@20"], r["Recall@20"]) for r in records
                      if r["file"] == "test_ood" and r.get("fhn_heldout") is not None
                      and "ARP@20" in r and "Recall@20" in r])


def _fmt(value: Optional[float], digits: int = 5) -> str:
    return "" if value is None else f"{value:.{digits}f}"


def _pct(value: Optional[float]) -> str:
    return "" if value is None else f"{100 * value:+.1f}%"


def _candidate(candidate: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in candidate.items()) or "-"


def markdown(records: list[dict[str, Any]], header: str) -> str:
    """The Markdown tables."""
    out = [header, ""]
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in records:
        groups.setdefault((r["protocol"], r["dataset"]), []).append(r)
    for (protocol, dataset), rows in groups.items():
        out += [f"### {dataset}, protocol `{protocol}`", ""]
        methods = list(dict.fromkeys(r["method"] for r in rows))
        files = list(dict.fromkeys(r["file"] for r in rows))
        by = {(r["method"], r["file"]): r for r in rows}
        cols = [(f, k) for f in files for k in FOUR]
        best = {c: max((by[(m, c[0])].get(c[1], -1) for m in methods if (m, c[0]) in by), default=None) for c in cols}
        head = ["method", "chosen", "seeds", "selected epochs", "epochs", "s/epoch"]
        head += [f"{f.replace('test_', '').upper()} {SHORT[k]}" for f, k in cols]
        head += [f"{f.replace('test_', '').upper()} R@20 vs RNS" for f in files]
        head += [f"{f.replace('test_', '').upper()} ARP@20" for f in files]
        head += [f"{f.replace('test_', '').upper()} impr. vs best other (p)" for f in files]
        out += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for m in methods:
            first = by[(m, files[0])]
            cells = [m, _candidate(first["candidate"]), str(first["seeds"]),
                     first["selected_epochs"].replace(" ", ", "), f"{first['epochs']:.0f}",
                     f"{first['sec_per_epoch']:.2f}"]
            for f, k in cols:
                r = by.get((m, f), {})
                if k not in r:
                    cells.append("")
                    continue
                text = f"{r[k]:.5f} ± {r[k + '_std']:.5f}"
                cells.append(f"**{text}**" if best[(f, k)] is not None and r[k] == best[(f, k)] else text)
            cells += [_pct(by.get((m, f), {}).get("vs_rns_R@20")) if m != "rns" else "" for f in files]
            cells += [_fmt(by.get((m, f), {}).get("ARP@20"), 1) for f in files]
            for f in files:
                r = by.get((m, f), {})
                p = r.get("p_value")
                cells.append(f"{_pct(r.get('improvement'))} vs {r.get('vs', '-')} ({'-' if p is None else f'p={p:.3f}'})")
            out.append("| " + " | ".join(cells) + " |")
        out.append("")
        fhn_rows = [by[(m, files[0])] for m in methods if "fhn_heldout" in by[(m, files[0])]]
        if fhn_rows:
            out += [f"False hard negatives at the selected epoch ({dataset}, `{protocol}`):", "",
                    "| method | fhn_heldout | chance | fhn_true | chance |", "|---|---|---|---|---|"]
            for r in fhn_rows:
                out.append(f"| {r['method']} | {_fmt(r.get('fhn_heldout'), 4)} | {_fmt(r.get('fhn_heldout_base'), 4)} | "
                           f"{_fmt(r.get('fhn_true'), 4)} | {_fmt(r.get('fhn_true_base'), 4)} |")
            out.append("")
            for rate in ("fhn_heldout", "fhn_true"):
                corr = fhn_correlation(rows, rate)
                if corr is not None:
                    out.append(f"Across the {corr[2]} methods, Spearman's rho between {rate} / chance and test_ood "
                               f"Recall@20: {corr[0]:+.2f} (p = {corr[1]:.3f}).")
            corr = popularity_correlation(rows)
            if corr is not None:
                out.append(f"Across the same {corr[2]} methods, Spearman's rho between the OOD ARP@20 (popularity of "
                           f"the recommendations) and test_ood Recall@20: {corr[0]:+.2f} (p = {corr[1]:.3f}).")
            out.append("")
    return "\n".join(out)


def summary_markdown(records: list[dict[str, Any]], header_line: str) -> str:
    """One compact table per protocol: methods as rows, per dataset the test Recall@20 (OOD and IID, mean ±
    std over seeds, change vs RNS) and the number of seeds; the best OOD value per dataset in bold."""
    out = [header_line, ""]
    for protocol in dict.fromkeys(r["protocol"] for r in records):
        rows = [r for r in records if r["protocol"] == protocol]
        datasets = list(dict.fromkeys(r["dataset"] for r in rows))
        methods = list(dict.fromkeys(r["method"] for r in rows))
        by = {(r["dataset"], r["method"], r["file"]): r for r in rows}
        best = {d: max((by[(d, m, "test_ood")].get("Recall@20", -1) for m in methods if (d, m, "test_ood") in by),
                       default=None) for d in datasets}
        out += [f"### Recall@20, protocol `{protocol}`", "",
                "| method | " + " | ".join(f"{d} OOD | {d} IID" for d in datasets) + " |",
                "|---|" + "---|---|" * len(datasets)]
        for m in methods:
            cells = [m]
            for d in datasets:
                for f in ("test_ood", "test_iid"):
                    r = by.get((d, m, f))
                    if r is None or "Recall@20" not in r:
                        cells.append("")
                        continue
                    text = f"{r['Recall@20']:.4f} ± {r['Recall@20_std']:.4f}"
                    if f == "test_ood" and r["Recall@20"] == best[d]:
                        text = f"**{text}**"
                    vs = "" if m == "rns" or r.get("vs_rns_R@20") is None else f" ({_pct(r['vs_rns_R@20'])})"
                    cells.append(f"{text}{vs} [{r['seeds']}]")
            out.append("| " + " | ".join(cells) + " |")
        vs_rns = ", change relative to RNS in round brackets" if "rns" in methods else " (no RNS row to compare with)"
        out += ["", f"Mean ± sample std over seeds [number of seeds]{vs_rns}; best OOD value per dataset in bold.", ""]
    return "\n".join(out)


def selection_shift(here: list[dict[str, Any]], there: list[dict[str, Any]], protocol: str) -> list[dict[str, Any]]:
    """Per protocol of this grid, dataset and method also in the other grid under `protocol`: Recall@20 on each
    test file under both selections, and each method's test_ood Recall@20 rank (1 = best) among those methods."""
    other = {(r["dataset"], r["method"], r["file"]): r for r in there if r["protocol"] == protocol}
    out = []
    for mine in dict.fromkeys(r["protocol"] for r in here):
        for dataset in dict.fromkeys(r["dataset"] for r in here if r["protocol"] == mine):
            rows = {(r["method"], r["file"]): r for r in here if (r["protocol"], r["dataset"]) == (mine, dataset)}
            # per method in both grids with a test_ood Recall@20: its test_ood record here and there
            ood = {m: (r, other[(dataset, m, f)]) for (m, f), r in rows.items() if f == "test_ood"
                   and "Recall@20" in r and "Recall@20" in other.get((dataset, m, f), {})}
            if not ood:
                continue
            ranks_here = stats.rankdata([-a["Recall@20"] for a, _ in ood.values()], method="min")
            ranks_there = stats.rankdata([-b["Recall@20"] for _, b in ood.values()], method="min")
            for (m, (a, b)), rank, rank_against in zip(ood.items(), ranks_here, ranks_there):
                rec = {"protocol": mine, "against": protocol, "dataset": dataset, "method": m,
                       "rank": int(rank), "rank_against": int(rank_against), "epochs": a["selected_epochs"],
                       "epochs_against": b["selected_epochs"], "candidate_against": b["candidate"]}
                for f in ("test_ood", "test_iid"):
                    r, o = rows.get((m, f), {}), other.get((dataset, m, f), {})
                    rec[f] = r.get("Recall@20")
                    rec[f + "_peak"] = r.get("peak_R@20")
                    rec[f + "_against"] = o.get("Recall@20")
                    if rec[f] is not None and rec[f + "_against"]:
                        rec[f + "_change"] = rec[f] / rec[f + "_against"] - 1
                out.append(rec)
    return out


def selection_shift_markdown(records: list[dict[str, Any]], against: str) -> str:
    """The comparison of two selections: per dataset, both Recall@20 values and ranks, and Spearman's rho
    between the two rankings of test_ood Recall@20."""
    if not records:
        return f"No dataset and method of this grid is also in {against}.\n"
    out = [f"## This grid's selection against `{records[0]['against']}` of {against}", "",
           "Test Recall@20 (mean over seeds) of the methods both grids ran, each at the epoch its own protocol "
           "selected; rank 1 = best test_ood Recall@20 among these methods. Change: this grid relative to the "
           "other. Each grid's test_ood is the file its protocol reports on (`ood_valid` and `valid` runs report "
           "on the 70% of test_ood that `ood_valid` does not select on; `released` on all of test_ood), so the "
           "ranks compare directly and the values approximately. IID peak: the best test_iid Recall@20 over all "
           "epochs of this grid's runs (an oracle, for reading only): what the selected epoch gives up in "
           "distribution within the same training runs.", ""]
    for (protocol, dataset) in dict.fromkeys((r["protocol"], r["dataset"]) for r in records):
        rows = [r for r in records if (r["protocol"], r["dataset"]) == (protocol, dataset)]
        there = rows[0]["against"]
        out += [f"### {dataset}: `{protocol}` vs `{there}`", "",
                f"| method | OOD R@20 `{protocol}` (rank) | OOD R@20 `{there}` (rank) | OOD change | "
                f"IID R@20 `{protocol}` (IID peak) | IID R@20 `{there}` | IID change | selected epochs `{protocol}` | "
                f"selected epochs `{there}` (chosen) |", "|---|---|---|---|---|---|---|---|---|"]
        for r in sorted(rows, key=lambda r: r["rank"]):
            chosen = _candidate(r["candidate_against"])
            peak = "" if r["test_iid_peak"] is None else f" ({r['test_iid_peak']:.4f})"
            out.append(f"| {r['method']} | {_fmt(r['test_ood'], 4)} ({r['rank']}) | "
                       f"{_fmt(r['test_ood_against'], 4)} ({r['rank_against']}) | {_pct(r.get('test_ood_change'))} | "
                       f"{_fmt(r['test_iid'], 4)}{peak} | {_fmt(r['test_iid_against'], 4)} | "
                       f"{_pct(r.get('test_iid_change'))} | "
                       f"{r['epochs'].replace(' ', ', ')} | {r['epochs_against'].replace(' ', ', ')} ({chosen}) |")
        out.append("")
        if len(rows) >= 3:
            rho = stats.spearmanr([r["rank"] for r in rows], [r["rank_against"] for r in rows])
            out += [f"Spearman's rho between the two rankings over {len(rows)} methods: {float(rho.statistic):+.2f} "
                    f"(p = {float(rho.pvalue):.3f}).", ""]
    return "\n".join(out)


def to_csv(records: list[dict[str, Any]]) -> str:
    """The records as CSV."""
    columns: list[str] = []
    for r in records:
        columns += [k for k in r if k not in columns]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for r in records:
        writer.writerow({k: json.dumps(v) if isinstance(v, dict) else v for k, v in r.items()})
    return buf.getvalue()


@dataclass
class Provenance:
    """Where a grid's tables come from: the commit they are made at, the commits and devices of its finished runs
    (from their config.json), and a line on how far the grid is."""

    commit: str
    run_commits: list[str]
    devices: list[str]
    progress: str

    @property
    def runs(self) -> str:
        """The runs' commits as the headers list them."""
        return ", ".join(self.run_commits) or "none"

    @property
    def hardware(self) -> str:
        """The machine and torch version the table was made on, and the devices its runs trained on."""
        import torch
        return (f"{platform.machine()}, {os.cpu_count()} CPU cores, torch {torch.__version__}; runs on "
                f"{', '.join(self.devices) or 'no recorded device'}")


def provenance(results: Path) -> Provenance:
    """The Provenance of a grid folder (SELFRec.git_commit: '+changes' when the code differs from the commit)."""
    manifest = read_manifest(results)
    commits, devices = set(), set()
    for cell in manifest["cells"]:
        if cell.get("run"):
            try:
                record = read_json(results / cell["run"] / "config.json")
            except ConfigError:
                continue
            commits.add(record.get("commit", "not recorded"))
            if cell.get("state") == "finished":
                devices.add(str(record.get("device.resolved") or record.get("device") or "not recorded"))
    states = [live_state(results, c) for c in manifest["cells"]]
    waiting = sum(all(v is None for v in chosen.values()) for chosen in manifest["choices"].values())
    named = (manifest.get("power") or {}).get("best_other", {})  # a grid with `power` names a best other per column
    unnamed = sum(f"{d}/{p}" not in named for d in manifest["datasets"] for p in manifest["protocols"]) \
        if manifest.get("power") else 0
    done = states.count("finished")
    if done == len(states) and not waiting and not unnamed:
        progress = f"Complete: all {len(states)} cells finished."
    else:
        progress = (f"**Interim**: {done} of the {len(states)} cells listed so far finished"
                    + (f", {states.count('failed')} failed" if "failed" in states else "")
                    + (f", {states.count('running')} running" if "running" in states else "")
                    + (f"; the later seeds of {waiting} dataset/method pair(s) are not listed yet" if waiting else "")
                    + "; rows show the seeds finished so far (`seeds` column), methods without a finished choice are absent"
                    + (f"; the best other method of {unnamed} column(s) is not named yet." if unnamed else "."))
    return Provenance(git_commit(), sorted(commits), sorted(devices), progress)


def split_sizes(results: Path, datasets: list[str]) -> list[str]:
    """Per dataset, the rows and users of the ood_valid part and of the OOD test part the grid reports on (its
    data/<preset>-ood<fraction>/ files)."""
    lines = []
    for dataset in datasets:
        for folder in sorted((Path(results) / "data").glob(f"{dataset}-ood*")):
            fmt = get_preset(dataset).format
            parts = {name: read_interactions(folder / file, fmt) for name, file in
                     (("ood_valid", "ood_valid.txt"), ("test_ood", "test_ood_rest.txt")) if (folder / file).is_file()}
            if len(parts) < 2:
                continue
            rows = {k: len(v.users) for k, v in parts.items()}
            users = {k: len(set(v.users)) for k, v in parts.items()}
            share = rows["ood_valid"] / max(1, rows["ood_valid"] + rows["test_ood"])
            lines.append(f"{dataset}: ood_valid {rows['ood_valid']} rows of {users['ood_valid']} users "
                         f"({share:.0%} of the OOD rows), OOD test {rows['test_ood']} rows of {users['test_ood']} users")
    return lines


def header(results: Path) -> str:
    """Commit, command and hardware of the table, the selection rule, its fallback ties and the OOD split sizes."""
    manifest = read_manifest(results)
    made = provenance(results)
    text = (f"## Grid `{manifest['grid']}`\n\n{made.progress}\n\ntable made at commit `{made.commit}` by `python -m bench.table {repo_relative(results.resolve())}`; "
            f"runs made at commit(s): {made.runs}; "
            f"runs by `python -m bench.grid {grid_file(manifest)}`; hardware: {made.hardware}. Mean ± sample std over seeds; "
            f"each method at the hyperparameters chosen on its protocol's validation data (first seed). "
            f"Skipped datasets: {manifest.get('skipped_datasets') or 'none'}.")
    if not set(manifest["protocols"]) & {"valid", "ood_valid"}:
        return text
    ties = manifest.get("tie_fallback")
    text += ("\n\nSelection (bench/protocol.py): each protocol cuts a run's curve where a run stopping on its own "
             "validation file alone would have stopped, and reports the best validation Recall@20 there (then NDCG@20, "
             "then the earlier epoch); candidates are chosen by validation Recall@20, NDCG@20, Recall@10, NDCG@10. "
             + ("Choices a tie of all four made (then the sorted candidate tag): "
                + (f"{len(ties)} ({', '.join(ties)})." if ties else "none.") if ties is not None else
                "Choices a tie of all four made: not recorded in this grid.json (made before ties were counted)."))
    sizes = split_sizes(results, manifest.get("datasets") or [])
    if sizes and "ood_valid" in manifest["protocols"]:
        text += "\n\nOOD split (per user, floor of the fraction of each user's OOD rows): " + "; ".join(sizes) + "."
    return text


def main(argv: Optional[list[str]] = None) -> int:
    """Command line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("results", type=Path)
    parser.add_argument("--out", type=Path, help="folder for table.md and table.csv (default: RESULTS)")
    parser.add_argument("--against", type=Path, metavar="OTHER_RESULTS",
                        help="also write selection.md: each method's test Recall@20 and rank here vs in this other "
                             "grid's results under --against-protocol (e.g. the released protocol vs main's valid)")
    parser.add_argument("--against-protocol", default="valid", help="the other grid's protocol (default: valid)")
    args = parser.parse_args(argv)
    try:
        write_tables(args)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


def write_tables(args: argparse.Namespace) -> None:
    """The tables of args.results (and selection.md against args.against); a ConfigError for a folder without a
    readable grid.json or a damaged record."""
    read_manifest(args.results)
    if args.against:
        theirs = read_manifest(args.against)["protocols"]
        if args.against_protocol not in theirs:
            raise ConfigError(f"{args.against} has no protocol {args.against_protocol!r} (it has: {', '.join(theirs)})")
    records = summarize(collect(args.results))
    out = args.out or args.results
    head = header(args.results)
    atomic_write_text(out / "table.md", markdown(records, head) + "\n" + candidates_markdown(candidates(args.results)))
    atomic_write_text(out / "table.csv", to_csv(records))
    atomic_write_text(out / "summary.md", summary_markdown(records, head) + "\n")
    if args.against:
        shift = selection_shift(records, summarize(collect(args.against)), args.against_protocol)
        against = repo_relative(args.against.resolve())
        command = (f"`python -m bench.table {repo_relative(args.results.resolve())} --against {against} "
                   f"--against-protocol {args.against_protocol}`")
        atomic_write_text(out / "selection.md", f"{head}\n\nComparison written by {command}.\n\n"
                          + selection_shift_markdown(shift, str(against)) + "\n")
    print(out / "table.md")


if __name__ == "__main__":
    sys.exit(main())
