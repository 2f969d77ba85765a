"""Figures of a grid's results (needs matplotlib, an optional extra): python -m bench.plot RESULTS_DIR [--out DIR]

Per protocol and dataset: Recall@20 curves over epochs of the validation file(s), test_iid and test_ood
(mean over seeds of each method at its chosen hyperparameters, band = std); the IID-vs-OOD Recall@20
scatter at the selected epochs (the trade-off frontier); the false-hard-negative rate over epochs
relative to its chance level. PNG files.
"""
from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path
from typing import Optional

import numpy as np

from bench.records import read_manifest, selected_index
from bench.table import finished_rows
from util.typing_coerce import ConfigError


def curves(results: Path) -> dict:
    """protocol -> dataset -> method -> list of (rows, selected index) over seeds."""
    manifest = read_manifest(results)
    out: dict = {}
    for protocol in manifest["protocols"]:
        for key, chosen in manifest["choices"].items():
            dataset, method = key.split("/", 1)
            if chosen.get(protocol) is None:
                continue
            for cell in manifest["cells"]:
                if (cell["dataset"], cell["method"], cell["candidate"]) == (dataset, method, chosen[protocol]) \
                        and cell["state"] == "finished":
                    run = results / cell["run"]
                    rows = finished_rows(run)
                    out.setdefault(protocol, {}).setdefault(dataset, {}).setdefault(method, []).append(
                        (rows, selected_index(rows, protocol, run)))
    return out


def _style(index: int) -> dict:
    """Colour, marker and line style of the index-th method: the 10 default colours, then again with another
    marker and line style, so that no two of up to 30 methods look alike."""
    return {"color": f"C{index % 10}", "marker": "osD"[index // 10 % 3], "ls": ("-", "--", ":")[index // 10 % 3]}


def _band(ax, runs, column, label, style):
    length = max(len(rows) for rows, _ in runs)
    matrix = np.full((len(runs), length), np.nan)
    for k, (rows, _) in enumerate(runs):
        matrix[k, :len(rows)] = [r.get(column, np.nan) for r in rows]
    if np.all(np.isnan(matrix)):
        return
    mean = np.nanmean(matrix, 0)
    with warnings.catch_warnings():  # epochs only one seed reached have no spread: 0, not a warning
        warnings.simplefilter("ignore", RuntimeWarning)
        std = np.nan_to_num(np.nanstd(matrix, 0, ddof=1)) if len(matrix) > 1 else np.zeros_like(mean)
    x = np.arange(1, length + 1)
    ax.plot(x, mean, label=label, lw=1.2, color=style["color"], ls=style["ls"])
    ax.fill_between(x, mean - std, mean + std, color=style["color"], alpha=0.2)


def _std(values: list[float]) -> float:
    """Sample standard deviation, as in the tables (0 for one value)."""
    return float(np.std(values, ddof=1)) if len(values) > 1 else 0.0


def _save(fig, path: Path) -> Path:
    """Write a figure as PNG and close it."""
    import matplotlib.pyplot as plt
    fig.savefig(path, dpi=110, bbox_inches="tight")  # room for a legend beside the axes
    plt.close(fig)
    return path


def plot(results: Path, out: Path) -> list[Path]:
    """Write the figures; returns their paths."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    written = []
    for protocol, datasets in curves(results).items():
        for dataset, methods in datasets.items():
            files = [f for f in ("valid", "ood_valid", "test_iid", "test_ood")
                     if any(f"{f}/Recall@20" in rows[0] for runs in methods.values() for rows, _ in runs)]
            styles = {method: _style(k) for k, method in enumerate(methods)}  # one look per method in every figure
            fig, axes = plt.subplots(1, len(files), figsize=(4.2 * len(files), 3.4), squeeze=False)
            for ax, f in zip(axes[0], files):
                for method, runs in methods.items():
                    _band(ax, runs, f"{f}/Recall@20", method, styles[method])
                ax.set_title(f"{dataset}: {f} Recall@20")
                ax.set_xlabel("epoch")
            axes[0][-1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0))
            written.append(_save(fig, out / f"{protocol}-{dataset}-curves.png"))
            if {"test_iid", "test_ood"} <= set(files):
                fig, ax = plt.subplots(figsize=(4.6, 4))
                for method, runs in methods.items():
                    iid = [rows[i]["test_iid/Recall@20"] for rows, i in runs]
                    ood = [rows[i]["test_ood/Recall@20"] for rows, i in runs]
                    ax.errorbar(np.mean(iid), np.mean(ood), xerr=_std(iid), yerr=_std(ood),
                                fmt=styles[method]["marker"], color=styles[method]["color"], label=method)
                ax.set_xlabel("test_iid Recall@20")
                ax.set_ylabel("test_ood Recall@20")
                ax.set_title(f"{dataset} ({protocol}): IID vs OOD at the selected epoch", fontsize=9)
                ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0))
                written.append(_save(fig, out / f"{protocol}-{dataset}-iid-vs-ood.png"))
            lifts = {method: [[r.get("fhn_heldout", np.nan) / r["fhn_heldout_base"] for r in rows
                               if "fhn_heldout_base" in r] for rows, _ in runs] for method, runs in methods.items()}
            lifts = {method: [s for s in series if s] for method, series in lifts.items() if any(series)}
            if not lifts:  # the FHN probe was off (fhn.probe: 0): no figure
                continue
            fig, ax = plt.subplots(figsize=(4.6, 3.4))
            for method, series in lifts.items():
                _band(ax, [([{"lift": v} for v in values], 0) for values in series], "lift", method, styles[method])
            ax.axhline(1.0, color="grey", lw=0.8, ls="--")
            ax.set_title(f"{dataset}: fhn_heldout / chance", fontsize=9)
            ax.set_xlabel("epoch")
            ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0))
            written.append(_save(fig, out / f"{protocol}-{dataset}-fhn.png"))
    return written


def available() -> bool:
    """Whether the figures can be drawn: matplotlib is an optional extra."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def main(argv: Optional[list[str]] = None) -> int:
    """Command line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("results", type=Path)
    parser.add_argument("--out", type=Path, help="folder for the PNG files (default: RESULTS/figures)")
    args = parser.parse_args(argv)
    if not available():
        print("error: bench.plot needs matplotlib (an optional extra: pip install matplotlib)", file=sys.stderr)
        return 2
    out = args.out or args.results / "figures"
    try:
        read_manifest(args.results)
        out.mkdir(parents=True, exist_ok=True)
        paths = plot(args.results, out)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for path in paths:
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
