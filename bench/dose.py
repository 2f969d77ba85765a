"""The hardness dose-response: python -m bench.dose [RESULTS_DIR] [--out DIR]

Reads a dose grid's records (default results/grids/dose; conf/grids/dose.yaml) whose methods differ only in
one hardness knob: DNS's `params.dns.n_candidates` M (M = 1 is a random negative) and CNSDiff's fixed mix
ratio `params.cnsdiff.fixed_ratio` r (the synthetic share of the mixed negative, curriculum fixed). Per
protocol, dataset and dose, over seeds at the protocol's selected epoch (mean ± sample std): the FHN rate
of the negatives trained on, averaged over the epochs up to the selected one (exact against the ground
truth where the dataset has one, `fhn_true`, else the held-out rate `fhn_heldout`), its lift over chance
(rate / the same rate of a uniform random item), the mean negative score, ARP@20 of the test_ood
recommendations, and test_iid / test_ood Recall@20; per sampler line, Spearman's rho between the FHN rate and
test_ood Recall@20 over its runs and the dose with the best mean OOD Recall@20. Writes dose.md, dose.csv and (with matplotlib)
figures/dose-PROTOCOL-DATASET.png: OOD Recall@20 against the FHN rate, one line per sampler, points
labelled by M or r, bars = sample std over seeds.
"""
from __future__ import annotations

import argparse
import csv
import io
import logging
import statistics
import sys
import warnings
from pathlib import Path
from typing import Any, Optional

from bench.records import read_manifest
from bench.table import collect, mean_std, provenance
from conf.config import REPO
from util.io import atomic_write_text
from util.typing_coerce import ConfigError

log = logging.getLogger("bench.dose")
# config key -> (sampler line, the knob's letter)
DOSE_KEYS = {"params.dns.n_candidates": ("DNS", "M"), "params.cnsdiff.fixed_ratio": ("CNSDiff", "r")}
COLUMNS = ("fhn", "lift", "neg_score", "arp20", "iid", "ood")


def dose_of(keys: dict[str, Any]) -> Optional[tuple[str, str, float]]:
    """(sampler line, knob letter, value) of a method's keys, or None if it sets no dose knob."""
    for key, (line, letter) in DOSE_KEYS.items():
        if key in keys:
            if line == "CNSDiff":
                line = f"CNSDiff {keys.get('params.cnsdiff.preset', 'official')}"
            return line, letter, float(keys[key])
    return None


def records(results: Path) -> list[dict[str, Any]]:
    """One record per protocol, dataset and dosed method, with each seed's values."""
    manifest = read_manifest(results)
    out = []
    for protocol, per_dataset in collect(results).items():
        for dataset, per_method in per_dataset.items():
            for method, entry in per_method.items():
                dose = dose_of(manifest["methods"][method].get("keys", {}))
                if dose is None:
                    continue
                seeds = {}
                for seed, run in entry["runs"].items():
                    upto = run["rows"][: run["epoch"]]  # the epochs up to the selected one
                    exact = all("fhn_true" in r for r in upto)
                    rate, base = ("fhn_true", "fhn_true_base") if exact else ("fhn_heldout", "fhn_heldout_base")
                    fhn = statistics.mean(r[rate] for r in upto)
                    chance = statistics.mean(r[base] for r in upto)
                    row = run["row"]
                    seeds[seed] = {"fhn": fhn, "lift": fhn / chance if chance > 0 else float("nan"),
                                   "neg_score": statistics.mean(r["neg_score"] for r in upto),
                                   "arp20": row.get("test_ood/ARP@20", float("nan")),
                                   "iid": row.get("test_iid/Recall@20", float("nan")),
                                   "ood": row["test_ood/Recall@20"], "exact": exact}
                out.append({"protocol": protocol, "dataset": dataset, "method": method, "line": dose[0],
                            "letter": dose[1], "dose": dose[2], "seeds": seeds})
    return sorted(out, key=lambda r: (r["protocol"], r["dataset"], r["line"], r["dose"]))


def group(recs: list[dict[str, Any]], *keys: str) -> dict[Any, list[dict[str, Any]]]:
    """Records by the value(s) of `keys`, in the records' order (sorted by `records`)."""
    out: dict[Any, list[dict[str, Any]]] = {}
    for r in recs:
        out.setdefault(r[keys[0]] if len(keys) == 1 else tuple(r[k] for k in keys), []).append(r)
    return out


def trend(rows: list[dict[str, Any]]) -> list[str]:
    """Per sampler line: Spearman's rho between the FHN rate and test_ood Recall@20 over its runs (every dose
    and seed), and the dose with the highest mean test_ood Recall@20."""
    from scipy import stats
    out = []
    for line, pts in group(rows, "line").items():
        fhn, ood = zip(*((s["fhn"], s["ood"]) for r in pts for s in r["seeds"].values()))
        best = max(pts, key=lambda r: statistics.mean(s["ood"] for s in r["seeds"].values()))
        text = f"highest mean test_ood R@20 at {best['letter']} = {best['dose']:g}"
        if len(fhn) >= 3 and len(set(fhn)) > 1 and len(set(ood)) > 1:  # spearmanr is undefined on a constant
            result = stats.spearmanr(fhn, ood)
            text = (f"Spearman's rho (FHN rate, test_ood R@20) over {len(fhn)} runs = {result.statistic:+.2f} "
                    f"(p = {result.pvalue:.2g}); " + text)
        out.append(f"- {line}: {text}")
    return out


def _cell(values: list[float], digits: int = 4) -> str:
    if any(v != v for v in values):
        return "n/a"
    mean, std = mean_std(values)
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def markdown(recs: list[dict[str, Any]], results: Path) -> str:
    """dose.md: one table per protocol and dataset."""
    made = provenance(results)
    lines = ["# Hardness dose-response", "", made.progress, "",
             f"Table made at commit `{made.commit}` by `python -m bench.dose`; runs made at commit(s): {made.runs}; "
             f"hardware: {made.hardware}. Mean ± sample std over seeds at the protocol's selected epoch. FHN rate: the "
             "share of trained-on negatives that are positives of the same user, averaged over the epochs up to the "
             "selected one (exact = against the ground truth; held-out = validation and test files); lift = rate / "
             "the rate of a uniform random item."]
    for (protocol, dataset), rows in group(recs, "protocol", "dataset").items():
        exact = all(s["exact"] for r in rows for s in r["seeds"].values())
        lines += ["", f"## {dataset}, protocol `{protocol}` (FHN rate {'exact' if exact else 'held-out'})", "",
                  "| sampler | knob | seeds | FHN rate | lift | neg score | ARP@20 (OOD) | test_iid R@20 | test_ood R@20 |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for r in rows:
            v = {c: [s[c] for s in r["seeds"].values()] for c in COLUMNS}
            lines.append(f"| {r['line']} | {r['letter']} = {r['dose']:g} | {len(r['seeds'])} | {_cell(v['fhn'], 5)} | "
                         f"{_cell(v['lift'], 2)} | {_cell(v['neg_score'], 3)} | {_cell(v['arp20'], 1)} | "
                         f"{_cell(v['iid'])} | {_cell(v['ood'])} |")
        lines += [""] + trend(rows)
    return "\n".join(lines) + "\n"


def to_csv(recs: list[dict[str, Any]]) -> str:
    """One line per record and seed."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["protocol", "dataset", "sampler", "knob", "dose", "seed", *COLUMNS, "fhn_exact"])
    for r in recs:
        for seed, s in sorted(r["seeds"].items()):
            writer.writerow([r["protocol"], r["dataset"], r["line"], r["letter"], r["dose"], seed,
                             *(f"{s[c]:.6g}" for c in COLUMNS), s["exact"]])
    return buf.getvalue()


def figures(recs: list[dict[str, Any]], out: Path) -> list[Path]:
    """OOD Recall@20 against the FHN rate per protocol and dataset (matplotlib, optional)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    paths = []
    for (protocol, dataset), rows in group(recs, "protocol", "dataset").items():
        fig, ax = plt.subplots(figsize=(6.5, 4.2))
        for line, pts in group(rows, "line").items():
            x, xerr = zip(*(mean_std([s["fhn"] for s in r["seeds"].values()]) for r in pts))
            y, yerr = zip(*(mean_std([s["ood"] for s in r["seeds"].values()]) for r in pts))
            ax.errorbar(x, y, xerr=xerr, yerr=yerr, marker="o", capsize=2, label=line)
            for r, xi, yi in zip(pts, x, y):
                ax.annotate(f"{r['letter']}={r['dose']:g}", (xi, yi), textcoords="offset points", xytext=(4, 4),
                            fontsize=7)
        exact = all(s["exact"] for r in rows for s in r["seeds"].values())
        ax.set_xlabel(f"FHN rate of the trained-on negatives ({'exact' if exact else 'held-out'})")
        ax.set_ylabel("test_ood Recall@20")
        ax.set_title(f"{dataset}, {protocol}: hardness dose-response")
        ax.legend(loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=8)
        fig.tight_layout()
        path = out / f"dose-{protocol}-{dataset}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=120)
        plt.close(fig)
        paths.append(path)
    return paths


def main(argv: Optional[list[str]] = None) -> int:
    """Command line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("results", nargs="?", type=Path, default=REPO / "results" / "grids" / "dose")
    parser.add_argument("--out", type=Path, default=REPO / "results" / "tables" / "dose")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    try:
        recs = records(args.results)
        text = markdown(recs, args.results)
    except ConfigError as exc:
        log.error("%s", exc)
        return 2
    atomic_write_text(args.out / "dose.md", text)
    atomic_write_text(args.out / "dose.csv", to_csv(recs))
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        warnings.warn("matplotlib is not installed: no figures (pip install matplotlib)")
    else:
        figures(recs, args.out / "figures")
    log.info("wrote %s (%d dose points)", args.out / "dose.md", len(recs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
