"""The fidelity table: python -m bench.fidelity [RESULTS_DIR] [--out DIR] [--reference-runs DIR]

Reads the `fidelity` grid's records (default results/grids/fidelity; bench.grid writes them) and puts each
baseline's mean ± sample std over seeds of test Recall@20 and NDCG@20, at the `reference` protocol's
selected epoch, beside the value its authors' log reports (REFERENCE below: the file and the value), with
the ratio ours / theirs and whether it is within ±5%; per dataset, the order of the methods in their logs
and in ours; DNS(M,N)'s gain over RNS on MF at the same settings (its paper's data is not ours). With
--reference-runs DIR, also the reference code's own runs on this machine: files DATASET-SAMPLER-sSEED.log
holding the reference's printed evaluation tables (`| epoch | ... | [recall] | [ndcg] | ...`), read with the
reference's rule (the last evaluation whose Recall@20 is >= the best so far). Writes fidelity.md.
"""
from __future__ import annotations

import argparse
import logging
import re
import statistics
import sys
from pathlib import Path
from typing import Any, NamedTuple, Optional

from bench.records import read_json, read_manifest
from bench.table import grid_file, mean_std, provenance
from conf.config import REPO
from util.io import atomic_write_text
from util.typing_coerce import ConfigError

log = logging.getLogger("bench.fidelity")


class Reference(NamedTuple):
    """One value reported by a reference's own log."""

    recall: float
    ndcg: float
    source: str  # repository and file of the log
    epoch: int  # the epoch (0-based, as the log prints it) whose row is reported


DENS_LOG = "Riwei-HEU/DENS DENS/log/{d}/{d}-{s}.ipynb"
AHNS_LOG = "Riwei-HEU/AHNS {d}-mf.ipynb"
# (grid dataset, grid method) -> the reference log's Recall@20 and NDCG@20 at its early-stopping choice (the
# best test Recall@20 row, ties to the later epoch; NDCG@20 from the same row), read off the logs at the
# commits pinned in data/presets.py.
REFERENCE: dict[tuple[str, str], Reference] = {
    ("dens-beauty", "rns"): Reference(0.03852911, 0.02054067, DENS_LOG.format(d="beauty", s="rns"), 255),
    ("dens-beauty", "dns"): Reference(0.04182222, 0.02261953, DENS_LOG.format(d="beauty", s="dns"), 40),
    ("dens-beauty", "mixgcf"): Reference(0.04204441, 0.02281942, DENS_LOG.format(d="beauty", s="mix"), 70),
    ("dens-beauty", "dens"): Reference(0.04402626, 0.02344910, DENS_LOG.format(d="beauty", s="dens"), 70),
    ("dens-toy", "rns"): Reference(0.04441291, 0.02289649, DENS_LOG.format(d="toy", s="rns"), 125),
    ("dens-toy", "dns"): Reference(0.04765543, 0.02520716, DENS_LOG.format(d="toy", s="dns"), 25),
    ("dens-toy", "mixgcf"): Reference(0.04707734, 0.02465241, DENS_LOG.format(d="toy", s="mix"), 45),
    ("dens-toy", "dens"): Reference(0.05014095, 0.02571347, DENS_LOG.format(d="toy", s="dens"), 40),
    ("dens-baby", "rns"): Reference(0.03507469, 0.01643776, DENS_LOG.format(d="baby", s="rns"), 20),
    ("dens-baby", "dns"): Reference(0.03460335, 0.01614731, DENS_LOG.format(d="baby", s="dns"), 15),
    ("dens-baby", "mixgcf"): Reference(0.03540820, 0.01629012, DENS_LOG.format(d="baby", s="mix"), 25),
    ("dens-baby", "dens"): Reference(0.03899206, 0.01844952, DENS_LOG.format(d="baby", s="dens"), 55),
    ("ahns-phone", "mf-ahns"): Reference(0.13036, 0.07106, AHNS_LOG.format(d="phone"), 40),
    ("ahns-tool", "mf-ahns"): Reference(0.07309, 0.04010, AHNS_LOG.format(d="tool"), 25),
}
# the gain DNS(M,N) must show over RNS on MF at its reference's settings (no log of it on these data)
GAIN_PAIRS = (("mf32-dns_mn", "mf32-rns"),)
TOLERANCE = 0.05
ROW = re.compile(r"^\|\s*(\d+)\s*\|[^|]*\|[^|]*\|[^|]*\|\s*\[([0-9.eE+-]+)\]\s*\|\s*\[([0-9.eE+-]+)\]")


def reference_log_choice(text: str) -> Optional[tuple[int, float, float]]:
    """(epoch, Recall@20, NDCG@20) that a reference run's printed tables report: the last evaluation whose
    Recall@20 is >= the best so far (their `early_stopping`); None if the text holds no evaluation row."""
    best: Optional[tuple[int, float, float]] = None
    for line in text.splitlines():
        m = ROW.match(line.strip())
        if m:
            epoch, recall, ndcg = int(m.group(1)), float(m.group(2)), float(m.group(3))
            if best is None or recall >= best[1]:
                best = (epoch, recall, ndcg)
    return best


def collect(results: Path) -> dict[tuple[str, str], dict[int, dict[str, Any]]]:
    """(dataset, method) -> seed -> the finished run's Recall@20 and NDCG@20 on the test file its selection reads
    (metrics.json `selection.file`), that file, the selected epoch (1-based) and the epochs run."""
    manifest = read_manifest(results)
    out: dict[tuple[str, str], dict[int, dict[str, Any]]] = {}
    for cell in manifest["cells"]:
        if cell["state"] != "finished" or not cell["run"]:
            continue
        metrics = read_json(results / cell["run"] / "metrics.json")
        test = metrics["selection"]["file"]
        out.setdefault((cell["dataset"], cell["method"]), {})[int(cell["seed"])] = {
            "recall": metrics["metrics"][test]["Recall@20"], "ndcg": metrics["metrics"][test]["NDCG@20"],
            "epoch": metrics["selection"]["epoch"], "epochs_run": metrics["selection"]["epochs_run"],
            "model": metrics["model"], "file": test}
    return out


def reference_runs(folder: Optional[Path]) -> dict[tuple[str, str], dict[int, tuple[int, float, float]]]:
    """(dataset, method) -> seed -> the reference code's own choice, from DATASET-SAMPLER-sSEED.log files."""
    out: dict[tuple[str, str], dict[int, tuple[int, float, float]]] = {}
    if folder is None:
        return out
    for path in sorted(Path(folder).glob("*-s*.log")):
        m = re.fullmatch(r"(.+)-([a-z_]+)-s(\d+)\.log", path.name)
        if not m:
            continue
        text = path.read_text(errors="replace")
        choice = reference_log_choice(text)
        if choice and "early stopping at" in text:  # only runs that ended
            out.setdefault((m.group(1), m.group(2)), {})[int(m.group(3))] = choice
    return out


def pm(values: list[float], count: bool = True) -> str:
    """mean ± sample std of the values (and their number, in brackets)."""
    mean, std = mean_std(values)
    return f"{mean:.4f} ± {std:.4f}" + (f" ({len(values)})" if count else "")


def within(ours: float, theirs: float) -> bool:
    """Whether ours / theirs is within ±TOLERANCE of 1."""
    return abs(ours / theirs - 1) <= TOLERANCE


def ratio_text(ours: float, theirs: float, mark: str = "**miss**") -> str:
    """ours / theirs to 3 decimals, with `mark` beside it when outside ±TOLERANCE."""
    return f"{ours / theirs:.3f}{'' if within(ours, theirs) else ' ' + mark}"


def epochs_text(seeds: dict[int, dict[str, Any]]) -> str:
    """Each seed's selected epoch (1-based) / epochs trained, in seed order (collect's records)."""
    return ", ".join(f"{v['epoch']}/{v['epochs_run']}" for _, v in sorted(seeds.items()))


def ranking(values: dict[str, float]) -> str:
    """The names, best (largest value) first, joined by ' > ', or by ' = ' between equal values."""
    names = sorted(values, key=lambda m: -values[m])  # stable: equal values keep their given order
    return "".join(("" if n == 0 else " = " if values[m] == values[names[n - 1]] else " > ") + m
                   for n, m in enumerate(names))


def concordance(published: dict[str, float], ours: dict[str, float]) -> tuple[int, int]:
    """(pairs of the names in both that ours orders as published does, pairs that published orders strictly)."""
    names = [m for m in published if m in ours]
    pairs = [(a, b) for a in names for b in names if published[a] > published[b]]
    return sum(ours[a] > ours[b] for a, b in pairs), len(pairs)


def made_by(results: Path, command: str, grid_options: str) -> list[str]:
    """The provenance lines of a table of a grid folder: how far the grid is, then the commit and command of the
    table, the commit(s) and command of its runs, and the hardware (bench.table.provenance)."""
    made = provenance(results)
    return [made.progress, "",
            f"Table made at commit `{made.commit}` by `{command}`; runs made at commit(s): {made.runs}, by "
            f"`python -m bench.grid {grid_file(read_manifest(results))} {grid_options}`; hardware: {made.hardware}."]


def render(runs: dict[tuple[str, str], dict[int, dict[str, Any]]],
           own: dict[tuple[str, str], dict[int, tuple[int, float, float]]], results: Path) -> str:
    """fidelity.md."""
    lines = ["# Fidelity of the baselines", ""] + made_by(
        results, "python -m bench.fidelity", "--dataset-root ../shared/datasets --jobs 2") + [
        "", "Each baseline on its authors' own split at its reference's settings (conf/grids/fidelity.yaml), under the",
        "references' protocol (`selection: reference`: every 5 epochs, best test Recall@20, stop after 10 checks",
        "without one). Ours: mean ± sample std over seeds (n). Ratio = ours / the log's value; **miss** = outside",
        f"±{TOLERANCE:.0%}. Epochs: each seed's selected epoch (1-based) / epochs trained; the log's epoch is 0-based.",
        "", "| dataset | sampler | backbone | reference R@20 | ours R@20 | ratio | reference N@20 | ours N@20 | ratio "
            "| epochs (ours) | reference log (epoch) |",
        "|---|---|---|---|---|---|---|---|---|---|---|"]
    keys = sorted(runs, key=lambda k: (k[0], k[1]))
    for key in keys:
        seeds = runs[key]
        ref = REFERENCE.get(key)
        rec = [v["recall"] for v in seeds.values()]
        ndcg = [v["ndcg"] for v in seeds.values()]
        epochs = epochs_text(seeds)
        model = next(iter(seeds.values()))["model"]
        if ref:
            lines.append(f"| {key[0]} | {key[1]} | {model} | {ref.recall:.4f} | {pm(rec)} | "
                         f"{ratio_text(statistics.mean(rec), ref.recall)} | {ref.ndcg:.4f} | {pm(ndcg)} | "
                         f"{ratio_text(statistics.mean(ndcg), ref.ndcg)} | {epochs} | `{ref.source}` ({ref.epoch}) |")
        else:
            lines.append(f"| {key[0]} | {key[1]} | {model} | none | {pm(rec)} | | none | {pm(ndcg)} | | {epochs} | |")
    lines += ["", "## Order of the methods per dataset (Recall@20, best first)", "",
              "| dataset | the authors' logs | ours (means) | same order |", "|---|---|---|---|"]
    for dataset in sorted({k[0] for k in REFERENCE}):
        logged = {m: ref.recall for (d, m), ref in REFERENCE.items() if d == dataset}
        if len(logged) < 2 or not all((dataset, m) in runs for m in logged):
            continue
        ours = {m: statistics.mean(v["recall"] for v in runs[(dataset, m)].values()) for m in logged}
        same, pairs = concordance(logged, ours)
        lines.append(f"| {dataset} | {ranking(logged)} | {ranking(ours)} | {'yes' if same == pairs else 'no'} |")
    lines += ["", "## Gains where the reference has no log on these data", "",
              "| dataset | method | vs | ours R@20 | vs R@20 | gain |", "|---|---|---|---|---|---|"]
    for dataset in sorted({k[0] for k in runs}):
        for method, base in GAIN_PAIRS:
            if (dataset, method) in runs and (dataset, base) in runs:
                a = statistics.mean(v["recall"] for v in runs[(dataset, method)].values())
                b = statistics.mean(v["recall"] for v in runs[(dataset, base)].values())
                lines.append(f"| {dataset} | {method} | {base} | {a:.4f} | {b:.4f} | {100 * (a / b - 1):+.1f}% |")
    if own:
        lines += ["", "## The reference code itself on this machine", "",
                  "The reference's own runs (its code with only the device, seed and NumPy-2 lines changed; see the",
                  "docs/fidelity.md), read with its own rule, beside ours.", "",
                  "| dataset | sampler | reference code R@20 | ours R@20 | ratio | reference code N@20 | ours N@20 | ratio "
                  "| reference code epochs | reference code / log R@20 |", "|---|---|---|---|---|---|---|---|---|---|"]
        for key in sorted(own):
            theirs = own[key]
            ours = runs.get(key, {})
            r_t, n_t = [v[1] for v in theirs.values()], [v[2] for v in theirs.values()]
            r_o, n_o = [v["recall"] for v in ours.values()], [v["ndcg"] for v in ours.values()]
            ratio_r = ratio_text(statistics.mean(r_o), statistics.mean(r_t)) if r_o else ""
            ratio_n = ratio_text(statistics.mean(n_o), statistics.mean(n_t)) if n_o else ""
            ref = REFERENCE.get(key)
            to_log = ratio_text(statistics.mean(r_t), ref.recall) if ref else ""
            lines.append(f"| {key[0]} | {key[1]} | {pm(r_t)} | {pm(r_o) if r_o else ''} | {ratio_r} | {pm(n_t)} | "
                         f"{pm(n_o) if n_o else ''} | {ratio_n} | {', '.join(str(v[0]) for _, v in sorted(theirs.items()))} "
                         f"| {to_log} |")
    return "\n".join(lines) + "\n"


def main(argv: Optional[list[str]] = None) -> int:
    """Command line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("results", nargs="?", type=Path, default=REPO / "results" / "grids" / "fidelity")
    parser.add_argument("--out", type=Path, default=REPO / "results" / "tables" / "fidelity")
    parser.add_argument("--reference-runs", type=Path, default=None,
                        help="folder of the reference code's own logs, DATASET-SAMPLER-sSEED.log")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    if args.reference_runs is not None and not args.reference_runs.is_dir():
        log.error("--reference-runs: %s is not a folder", args.reference_runs)
        return 2
    try:
        runs = collect(args.results)
        text = render(runs, reference_runs(args.reference_runs), args.results)
    except ConfigError as exc:
        log.error("%s", exc)
        return 2
    atomic_write_text(args.out / "fidelity.md", text)
    log.info("wrote %s (%d dataset/method pairs)", args.out / "fidelity.md", len(runs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
