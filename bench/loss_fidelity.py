"""The loss fidelity table: python -m bench.loss_fidelity [RESULTS_DIR] [--out DIR]

Reads the `loss-fidelity` grid's records (default results/grids/loss-fidelity; bench.grid writes them from
conf/grids/loss-fidelity.yaml) and puts each loss's mean ± sample std over seeds of test_ood Recall@20 and
NDCG@20 on MF, at the `reference` protocol's selected epoch (each run's metrics.json selection: the best *test*
NDCG@20, a test-set protocol), and the number of seeds, beside the values the PSL paper publishes (PUBLISHED
below, both metrics), with the ratios ours / published and whether each is within ±5%; per dataset, the order of
the losses by Recall@20 in the paper and in ours. A dataset and method without a finished run is "not run".
Writes loss-fidelity.md and loss-fidelity.csv.
"""
from __future__ import annotations

import argparse
import logging
import statistics
import sys
from pathlib import Path
from typing import Any, Optional

from bench.fidelity import TOLERANCE, collect, concordance, epochs_text, made_by, pm, ranking, ratio_text, within
from bench.records import read_manifest
from bench.table import live_state, mean_std, to_csv
from conf.config import REPO
from util.io import atomic_write_text
from util.typing_coerce import ConfigError

log = logging.getLogger("bench.loss_fidelity")

SOURCE = ("Yang et al., PSL: Rethinking and Improving Softmax Loss from Pairwise Perspective for Recommendation, "
          "NeurIPS 2024, Table 2 (popularity-shift OOD setting, MF backbone; read from paper/PSL-NeurIPS-2024.pdf of "
          "Tiny-Snow/IR-Benchmark)")
DATASETS = {"ir-cd-pop": "Amazon-CD", "ir-electronic-pop": "Amazon-Electronic"}  # grid preset -> the paper's name
# (grid dataset, grid method) -> the paper's (Recall@20, NDCG@20). Its one BPR row stands beside each of ours: it does
# not record whether its runs passed --norm (bpr: inner product; bpr-cos: cosine); on ir-cd-pop also bpr-200, the
# inner product trained all 200 epochs as the reference does (no early stop; BPR_ROWS).
_PAPER = {
    "ir-cd-pop": {"bpr": (0.0518, 0.0318), "sl": (0.1184, 0.0815), "advinfonce": (0.1189, 0.0818),
                  "bsl": (0.1184, 0.0815), "psl-tanh": (0.1202, 0.0834), "psl-atan": (0.1202, 0.0835),
                  "psl-relu": (0.1203, 0.0839)},
    "ir-electronic-pop": {"bpr": (0.0132, 0.0069), "sl": (0.0230, 0.0142), "advinfonce": (0.0228, 0.0139),
                          "bsl": (0.0231, 0.0142), "psl-tanh": (0.0239, 0.0146), "psl-atan": (0.0239, 0.0146),
                          "psl-relu": (0.0241, 0.0149)},
}
BPR_ROWS = {"ir-cd-pop": ("bpr", "bpr-cos", "bpr-200"), "ir-electronic-pop": ("bpr", "bpr-cos")}
PUBLISHED: dict[tuple[str, str], tuple[float, float]] = {
    (dataset, method): values for dataset, rows in _PAPER.items()
    for name, values in rows.items() for method in (BPR_ROWS[dataset] if name == "bpr" else (name,))}
METHODS = ("bpr", "bpr-cos", "bpr-200", "sl", "bsl", "psl-tanh", "psl-atan", "psl-relu",
           "advinfonce")  # the grid's order, for the rows
NONE = "—"  # a value we do not have
NOT_RUN = "not run"


def pairs(results: Path, manifest: dict[str, Any]) -> list[tuple[str, str]]:
    """Every (dataset, method) of the grid (its choices and cells) and of PUBLISHED on the grid's datasets, in
    the grid's dataset order and METHODS order (other methods after, by name); a ConfigError when the grid has
    none of the datasets the paper reports."""
    found = [tuple(key.split("/", 1)) for key in manifest.get("choices", {})]
    found += [(c["dataset"], c["method"]) for c in manifest["cells"]]
    datasets = list(dict.fromkeys(list(manifest.get("datasets") or []) + [d for d, _ in found]))
    if not set(datasets) & set(DATASETS):
        raise ConfigError(f"{results}: grid `{manifest.get('grid')}` has none of the datasets the PSL paper reports "
                          f"({', '.join(DATASETS)}); give the folder of conf/grids/loss-fidelity.yaml's grid")
    found += [key for key in PUBLISHED if key[0] in datasets]
    rank = {m: n for n, m in enumerate(METHODS)}
    return sorted(set(found), key=lambda k: (datasets.index(k[0]), rank.get(k[1], len(rank)), k[1]))


def not_run(results: Path, manifest: dict[str, Any], dataset: str, method: str) -> str:
    """'not run', with how many of the pair's listed cells are running or failed."""
    states = [live_state(results, c) for c in manifest["cells"]
              if (c["dataset"], c["method"]) == (dataset, method)]
    busy = ", ".join(f"{states.count(s)} {s}" for s in ("running", "failed") if s in states)
    return f"{NOT_RUN} ({busy})" if busy else NOT_RUN


def summarize(results: Path) -> list[dict[str, Any]]:
    """One record per (dataset, method): seeds, mean and sample std of Recall@20 and NDCG@20 on the selection's
    test file, the published values (None: the paper has none), ratios, within ±TOLERANCE, the epochs."""
    manifest = read_manifest(results)
    runs = collect(results)
    records = []
    for dataset, method in pairs(results, manifest):
        seeds = runs.get((dataset, method), {})
        published = PUBLISHED.get((dataset, method))
        rec: dict[str, Any] = {"dataset": dataset, "method": method, "seeds": len(seeds),
                               "published_recall": published[0] if published else None,
                               "published_ndcg": published[1] if published else None}
        if not seeds:
            rec["state"] = not_run(results, manifest, dataset, method)
            records.append(rec)
            continue
        recall, ndcg = [v["recall"] for v in seeds.values()], [v["ndcg"] for v in seeds.values()]
        rec.update(state="finished", file=", ".join(sorted({v["file"] for v in seeds.values()})),
                   recall=statistics.mean(recall), recall_std=mean_std(recall)[1],
                   ndcg=statistics.mean(ndcg), ndcg_std=mean_std(ndcg)[1], seed_list=" ".join(map(str, sorted(seeds))),
                   recall_text=pm(recall, count=False), ndcg_text=pm(ndcg, count=False), epochs=epochs_text(seeds))
        if published is not None:
            rec.update(ratio=rec["recall"] / published[0], within=within(rec["recall"], published[0]),
                       ndcg_ratio=rec["ndcg"] / published[1], ndcg_within=within(rec["ndcg"], published[1]))
        records.append(rec)
    return records


def order_rows(records: list[dict[str, Any]]) -> list[str]:
    """Per dataset, over the methods with a published Recall@20: the paper's order, ours, and how many of the
    pairs the paper orders strictly ours orders the same way."""
    lines = []
    for dataset in dict.fromkeys(r["dataset"] for r in records):
        rows = [r for r in records if r["dataset"] == dataset and r["published_recall"] is not None]
        published = {r["method"]: r["published_recall"] for r in rows if "recall" in r}
        ours = {r["method"]: r["recall"] for r in rows if "recall" in r}
        missing = ", ".join(r["method"] for r in rows if "recall" not in r) or "none"
        if len(ours) < 2:
            lines.append(f"| {dataset} | {ranking({r['method']: r['published_recall'] for r in rows})} | {NOT_RUN} "
                         f"| | {missing} |")
            continue
        same, n = concordance(published, ours)
        lines.append(f"| {dataset} | {ranking(published)} | {ranking(ours)} | {'yes' if same == n else 'no'} "
                     f"({same} of {n} pairs) | {missing} |")
    return lines


def render(records: list[dict[str, Any]], results: Path) -> str:
    """loss-fidelity.md."""
    files = sorted({r["file"] for r in records if "file" in r}) or ["test_ood"]
    lines = ["# Fidelity of the losses (PSL paper, MF)", ""] + made_by(
        results, "python -m bench.loss_fidelity", "--dataset-root ../shared/datasets --jobs 1") + [
        "", f"**Test-set protocol.** `selection: reference` reports each run at the epoch with the best *test* NDCG@20 "
            f"(evaluated after epochs 5, 10, ..., ties to the later epoch, stop after 10 checks without one; `bpr-200`: no "
            f"stop), as the paper's "
            f"code does: these numbers select on the file they report on ({', '.join(files)}); they check the losses "
            f"against the paper, they are not an honest OOD estimate.",
        "", f"Published: {SOURCE}; {', '.join(f'{d} = {p}' for p, d in DATASETS.items())}. Its BPR row stands "
            f"beside `bpr` (inner product) and `bpr-cos` (cosine): it does not record which its runs used; on "
            f"{', '.join(d for d, rows in BPR_ROWS.items() if 'bpr-200' in rows)} also beside `bpr-200`, the inner "
            f"product trained all 200 epochs as the reference does (no early stop). "
            f"Ours: mean ± sample std over seeds at each run's selected epoch; ratio = ours / published; **no** = "
            f"the ratio outside ±{TOLERANCE:.0%} of 1. Epochs: each seed's selected epoch (1-based) / epochs trained.",
        "", "| dataset | method | seeds | ours R@20 | published R@20 | ratio | ours N@20 | published N@20 | ratio | "
            "epochs (ours) |",
        "|---|---|---|---|---|---|---|---|---|---|"]
    for r in records:
        pub_r = NONE if r["published_recall"] is None else f"{r['published_recall']:.4f}"
        pub_n = NONE if r["published_ndcg"] is None else f"{r['published_ndcg']:.4f}"
        if "recall" not in r:
            lines.append(f"| {r['dataset']} | {r['method']} | 0 | {r['state']} | {pub_r} | {NONE} | {r['state']} | "
                         f"{pub_n} | {NONE} | |")
            continue
        ratio, ndcg_ratio = ((ratio_text(r["recall"], r["published_recall"], "**no**"),
                              ratio_text(r["ndcg"], r["published_ndcg"], "**no**")) if "ratio" in r else (NONE, NONE))
        lines.append(f"| {r['dataset']} | {r['method']} | {r['seeds']} | {r['recall_text']} | {pub_r} | {ratio} | "
                     f"{r['ndcg_text']} | {pub_n} | {ndcg_ratio} | {r['epochs']} |")
    lines += ["", "## Order of the losses per dataset (Recall@20, best first)", "",
              "Over the methods with a published Recall@20 and a finished run; `=` joins equal published values, "
              "whose order is not compared. Same order: yes when ours orders every pair the paper orders strictly "
              "the same way.", "",
              "| dataset | published | ours (means) | same order | published but not run |", "|---|---|---|---|---|"]
    return "\n".join(lines + order_rows(records)) + "\n"


def main(argv: Optional[list[str]] = None) -> int:
    """Command line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("results", nargs="?", type=Path, default=REPO / "results" / "grids" / "loss-fidelity")
    parser.add_argument("--out", type=Path, default=REPO / "results" / "tables" / "loss-fidelity")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    try:
        records = summarize(args.results)
        text = render(records, args.results)
    except ConfigError as exc:
        log.error("%s", exc)
        return 2
    atomic_write_text(args.out / "loss-fidelity.md", text)
    atomic_write_text(args.out / "loss-fidelity.csv", to_csv(
        [{k: v for k, v in r.items() if not k.endswith("_text")} for r in records]))
    log.info("wrote %s (%d of %d dataset/method pairs run)", args.out / "loss-fidelity.md",
             sum("recall" in r for r in records), len(records))
    return 0


if __name__ == "__main__":
    sys.exit(main())
