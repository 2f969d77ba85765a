"""A run's records as the grids read them: epochs.csv, the JSON files, a grid folder's grid.json, the epoch a protocol
reports; and a record against the configuration a grid gives its cell today (record_differences, shorter_rule: a
grid whose records were made under another configuration is refused, not mixed)."""
from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any, Optional

from bench.gridfile import TEST_SELECTED, is_int
from bench.protocol import candidate_score, protocol_index, stop_index
from conf.config import SHIPPED, load_config
from model import is_closed_form
from util.results import RECORD_ONLY, STOP_KEYS, rule_length
from util.typing_coerce import ConfigError


# ---- protocols on a run's epochs.csv ---------------------------------------------------
def read_rows(run: Path) -> list[dict[str, float]]:
    """epochs.csv of a run as floats (empty cells dropped). A damaged file is a ConfigError naming it and the line,
    not a row skipped: the file is rewritten whole and atomically after every epoch, so a row cut short (or a file
    without its last line end) was damaged after it was written, and a value cut mid-number would still parse."""
    path = Path(run) / "epochs.csv"
    if not path.is_file():
        return []
    text = path.read_text(encoding="utf-8", errors="replace")
    lines = list(csv.reader(text.splitlines()))
    rows = []
    for number, values in enumerate(lines[1:], start=2):
        problem = "" if len(values) == len(lines[0]) else f"{len(values)} values for {len(lines[0])} columns"
        if number == len(lines) and not text.endswith("\n"):
            problem = "the last line has no line end: the file is cut off"
        try:
            rows.append({k: float(v) for k, v in zip(lines[0], values) if v != ""})
        except ValueError as exc:
            problem = problem or f"a value that is not a number ({exc})"
        if problem:
            raise ConfigError(f"{path}: line {number}: {problem}; the record is damaged: restore it (a committed one "
                              f"with git) or move its run folder away and run the cell again")
    return rows


def read_json(path: Path) -> dict[str, Any]:
    """A JSON record of a run or grid (metrics.json, config.json, grid.json); a missing, truncated or unreadable one
    is a ConfigError naming the file."""
    try:
        value = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    except ValueError as exc:
        raise ConfigError(f"{path}: not valid JSON, truncated or damaged ({exc})") from None
    if not isinstance(value, dict):
        raise ConfigError(f"{path}: not a JSON object")
    return value


def read_manifest(results: Path) -> dict[str, Any]:
    """grid.json of a grid folder, for the tables and figures; a ConfigError naming the file when it is absent or
    damaged (the grid's dry run writes it again from the run records)."""
    path = Path(results) / "grid.json"
    again = "python -m bench.grid GRID_FILE --out FOLDER --dry-run writes it from the run records, running nothing"
    if not path.is_file():
        raise ConfigError(f"{results} has no grid.json ({again})")
    manifest = read_json(path)
    if not isinstance(manifest.get("cells"), list):
        raise ConfigError(f"{path}: not a grid.json of bench.grid (no list of `cells`); {again}")
    return manifest


def selected_index(rows: list[dict[str, float]], protocol: str, run: Optional[Path] = None) -> Optional[int]:
    """Row index of the epoch a protocol reports: for valid and ood_valid, the curve cut where a run stopping on
    the protocol's own validation file alone would have stopped (the run's config.json gives its patience and
    minimum epochs), then the best (Recall@20, NDCG@20) there, the earlier epoch on a tie (bench/protocol.py);
    for released and reference, the run's own choice."""
    if not rows:
        return None
    if protocol in TEST_SELECTED:
        return read_json(run / "metrics.json")["selection"]["epoch"] - 1
    keys = read_json(run / "config.json") if run is not None else {}
    return protocol_index(rows, protocol, keys)


def validation_scores(rows: list[dict[str, float]], protocol: str, run: Path) -> tuple[float, ...]:
    """What a candidate is chosen by: its reported epoch's validation Recall@20, NDCG@20, Recall@10, NDCG@10."""
    index = selected_index(rows, protocol, run)
    return candidate_score(rows[index] if index is not None else None, protocol)


# ---- a record against the grid's configuration ------------------------------------------
# config.json keys that do not say what a run computed: the record-only keys, the input the configuration was
# resolved from, where it was written, the stopping rule (a longer one continues the run: `short`) and where the data
# lies (the data files themselves are compared by DATA_PATHS)
UNCOMPARED = (*RECORD_ONLY, *STOP_KEYS, "input", "output", "log.dir", "dataset.root")
# data files, compared by their folder and file name (coat/train.txt, coat-ood0.3/ood_valid.txt): the same run
# whatever --dataset-root is on this machine or wherever the grid folder lies
DATA_PATHS = ("training.set", "valid.set", "test.set")
# Keys added after some runs were recorded: what the code did before the key existed (the commit that added it).
# A record without the key counts as made with that value: the same run as today's only where the grid gives it
# that value. DENS's per_layer, DNS(M,N)'s reduce and MixGCF's query and reg came with defaults that changed what
# those samplers do (2c532b7, the fidelity check), so their records from before differ from today's defaults.
ADDED_KEYS: dict[str, Any] = {
    "ItemKNN.k": 100, "ItemKNN.shrink": 10.0, "EASE.lambda": 500.0,  # 13ea5bf: only the models added with them use them
    "eval.every": 1, "learning.rate.step": 0, "learning.rate.decay": 1.0,  # 2c532b7: every epoch, a constant rate
    "params.dens.per_layer": False, "params.dns_mn.reduce": "mean",  # 2c532b7
    "params.mixgcf.query": "layer", "params.mixgcf.reg": "winner",  # 2c532b7
    "loss.name": "bpr", "embedding.init": "xavier", "eval.users": "test",  # the loss family: BPR as before
    "loss.score": "dot", "eval.first": 1,  # BPR on the inner product; evaluated after epochs 1, 1 + N, ...
    "params.cnsdiff.n_negs": 1,  # CNSDiff's negatives feeding a softmax-family loss: one per row before
}
ABSENT = object()  # a key one side of a comparison does not hold


def comparable(config: dict[str, Any]) -> dict[str, Any]:
    """The keys of a config.json (or RunConfig.to_dict()) that say what a run computes, as JSON holds them: the
    active sampler's and the active loss's params flat (params.OWNER.FIELD; the sections of other samplers are
    recorded, never used), data files reduced to their folder and file name."""
    out: dict[str, Any] = {}
    sampler = config.get("negative.sampler")
    loss = config.get("loss.name", "bpr")
    for key, value in json.loads(json.dumps(config, default=str)).items():
        if key in UNCOMPARED:
            continue
        if key == "params":
            for owner in dict.fromkeys((sampler, loss)):
                out.update({f"params.{owner}.{name}": v for name, v in ((value or {}).get(owner) or {}).items()})
        elif key in DATA_PATHS:
            out[key] = _data_file(value)
        elif key == "device" and value == "auto":  # the device `auto` resolved to (records from before the grids
            out[key] = config.get("device.resolved", value)  # fixed it): the same run as one that named it
        else:
            out[key] = value
    return out


def override(value: Any) -> str:
    """A grid key's value as `--set KEY=VALUE` writes it (a list comma-joined, None as none)."""
    if isinstance(value, (list, tuple)):
        return ",".join(str(v) for v in value)
    return "none" if value is None else str(value)


def resolved_keys(keys: dict[str, Any]) -> dict[str, Any]:
    """comparable() of the configuration the shipped config gives with these keys set (a grid method's fixed keys):
    every default filled in, the active sampler's and loss's params as params.OWNER.FIELD."""
    return comparable(load_config(SHIPPED, [f"{k}={override(v)}" for k, v in keys.items()]).to_dict())


def _data_file(value: Any) -> Any:
    if isinstance(value, dict):
        return {name: _data_file(path) for name, path in value.items()}
    return "/".join(Path(value).parts[-2:]) if isinstance(value, str) else value


def cap_unused(record: dict[str, Any], selection: dict[str, Any], cap: Any) -> bool:
    """Whether a run would have been the same under max.epoch `cap`: it stopped early (patience) before reaching its
    own cap and `cap`, and nothing in it depends on the cap itself (CNSDiff's Beta curriculum moves with epoch /
    max.epoch); a model fitted in closed form has no epochs."""
    if is_closed_form(record.get("model.name")):
        return True
    curriculum = ((record.get("params") or {}).get("cnsdiff") or {}).get("curriculum")
    if record.get("negative.sampler") == "cnsdiff" and curriculum == "beta":
        return False
    caps = (record.get("max.epoch"), cap)
    return (bool(selection.get("stopped_early")) and all(is_int(c) for c in caps)
            and int(selection.get("epochs_run", 0)) < min(caps))


def _shown(value: Any) -> str:
    if value is ABSENT:
        return "absent"
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True)


def record_differences(record: dict[str, Any], wanted: dict[str, Any], selection: dict[str, Any]) -> list[str]:
    """What makes a run's config.json (`record`, its metrics.json `selection`) another run than the configuration the
    grid gives its cell today (`wanted`, RunConfig.to_dict()), one `KEY: recorded A, grid B` per key; [] when it is
    the same run. A key only one side holds is a difference, except a key the record predates (ADDED_KEYS) where the
    grid gives it the value the code had then; a different max.epoch only where the cap could have mattered."""
    have, want = comparable(record), comparable(wanted)
    out = []
    for key in sorted(set(have) | set(want)):
        then, now = have.get(key, ABSENT), want.get(key, ABSENT)
        if then == now or (then is ABSENT and key in ADDED_KEYS and ADDED_KEYS[key] == now):
            continue
        if key == "max.epoch" and cap_unused(record, selection, now):
            continue
        before = f" (before the key: {_shown(ADDED_KEYS[key])})" if then is ABSENT and key in ADDED_KEYS else ""
        out.append(f"{key}: recorded {_shown(then)}{before}, grid {_shown(now)}")
    return out


def shorter_rule(record: dict[str, Any], wanted: dict[str, Any], run: Path) -> list[str]:
    """A stopping rule (STOP_KEYS) the grid gives shorter than the run had, where it would have stopped the run
    earlier (replayed on its epochs.csv, watching the same files): `KEY: recorded A, grid B (...)`; [] otherwise
    (a longer rule continues the run: `short`)."""
    if record.get("selection.resolved") != "valid":
        return []
    shorter = [k for k in STOP_KEYS if k in wanted and rule_length(k, wanted[k]) < rule_length(k, record.get(k, 0))]
    if not shorter:
        return []
    rows = read_rows(run)
    files = ["valid", *(record.get("early_stop.files") or [])]
    last = stop_index(rows, files, int(wanted.get("early_stop.patience", 0) or 0),
                      int(wanted.get("early_stop.min_epochs", 0) or 0), str(record.get("selection.metric", "Recall@20")))
    halt = int(wanted.get("early_stop.halt_after", 0) or 0)
    last = min(last, halt - 1) if halt > 0 else last
    if last + 1 >= len(rows):
        return []
    return [f"{k}: recorded {record.get(k)}, grid {wanted[k]} (the grid's rule stops this run after epoch {last + 1} "
            f"of its {len(rows)})" for k in shorter]
