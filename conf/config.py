"""Resolve conf/LightGCN.yaml + conf/params.py + --set overrides into one typed RunConfig.

Relative paths (files, dataset.root, output, log.dir) resolve against the repository root, the
folder of main.py, whatever the working directory."""
from __future__ import annotations

import dataclasses
import filecmp
import json
import os
import logging
import typing
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Optional, Sequence

import yaml

from conf.params import LOSS_PARAMS, PARAMS, REFERENCE_REG_FORM
from data.loader import FORMATS
from data.presets import get_preset
from util.results import RECORD_ONLY, STOP_KEYS, check_record, read_checkpoint, rule_length
from util.seed import SEED_MAX
from util.typing_coerce import ConfigError, coerce, suggest

log = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[1]
SELECTION_RULES = ("auto", "valid", "test_all4", "reference")


def _key(name: str, default: Any = None, *, choices: Sequence[str] = (), minimum: float | None = None,
         maximum: float | None = None, positive: bool = False, doc: str = "") -> Any:
    """Declare one YAML key of RunConfig with its default, allowed values (choices, a minimum and/or a maximum,
    or > 0) and help."""
    meta = {"key": name, "choices": tuple(choices), "min": minimum, "max": maximum, "positive": positive, "doc": doc}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class RunConfig:
    """Every setting of one run, typed; built once by load_config and passed down."""

    dataset: Optional[str] = _key("dataset", None, doc="preset name (data/presets.py); ignored when training.set is given")
    dataset_root: Path = _key("dataset.root", Path("dataset"), doc="folder holding dataset/<preset>/")
    training_set: Optional[Path] = _key("training.set", None, doc="training file")
    valid_set: Optional[Path] = _key("valid.set", None, doc="validation file (enables validation selection)")
    test_set: dict[str, Path] = _key("test.set", {}, doc="test files: a path, a list, or a mapping name: path")
    data_format: Optional[str] = _key("data.format", None, choices=FORMATS,
                                      doc="file format of all data files (a preset's own; with your files: detected "
                                          "when the content leaves no doubt, else required)")
    min_weight: float = _key("data.min_weight", 0.0,
                             doc="rows whose weight column is <= this (or not finite) are dropped and counted")
    model_name: str = _key("model.name", "LightGCN", doc="model registry name (model/__init__.py)")
    model_type: str = _key("model.type", "graph", choices=("graph",), doc="SELFRec model family")
    top_n: list[int] = _key("item.ranking.topN", [10, 20], minimum=1, doc="cut-offs K of every metric")
    embedding_size: int = _key("embedding.size", 64, minimum=1, doc="embedding dimension d")
    max_epoch: int = _key("max.epoch", 120, minimum=1, doc="training epochs at most")
    batch_size: int = _key("batch.size", 2048, minimum=1, doc="training pairs per batch")
    learning_rate: float = _key("learning.rate", 0.01, positive=True, doc="Adam learning rate (> 0)")
    reg_lambda: float = _key("reg.lambda", 1e-4, minimum=0.0, doc="L2 weight on the batch's layer-0 rows")
    reg_form: str = _key("reg.form", "auto", choices=("auto", "selfrec", "lightgcn", "weight_decay"),
                         doc="auto: the sampler's reference form (conf/params.py REFERENCE_REG_FORM: selfrec for "
                             "cnsdiff, lightgcn otherwise); selfrec: non-squared batch norms / B / B; lightgcn: "
                             "squared norms / 2 / B; weight_decay: Adam's weight_decay on every row, every step")
    lr_step: int = _key("learning.rate.step", 0, minimum=0,
                        doc="multiply the learning rate by learning.rate.decay every this many epochs; 0 = constant")
    lr_decay: float = _key("learning.rate.decay", 1.0, positive=True, doc="factor of the step decay (StepLR's gamma; > 0: "
                           "0 would stop training silently at the first step)")
    n_layer: int = _key("LightGCN.n_layer", 2, minimum=0, doc="propagation layers")
    knn_neighbours: int = _key("ItemKNN.k", 100, minimum=1, doc="ItemKNN: neighbours kept per item")
    knn_shrink: float = _key("ItemKNN.shrink", 10.0, minimum=0.0, doc="ItemKNN: cosine shrinkage term")
    ease_lambda: float = _key("EASE.lambda", 500.0, minimum=0.0, doc="EASE: L2 weight of the closed form")
    negative_sampler: str = _key("negative.sampler", "rns", doc="name in module/samplers registry")
    loss_name: str = _key("loss.name", "bpr", choices=("bpr", *LOSS_PARAMS),
                          doc="the ranking loss on the sampler's negatives (docs/losses.md): bpr | softmax (SL) | bsl | "
                              "psl | advinfonce; the last four score with cos/2 and take settings from params.LOSS")
    loss_score: str = _key("loss.score", "auto", choices=("auto", "dot", "cosine"),
                           doc="the score the loss trains on and evaluation ranks by: auto (dot for bpr, cosine for the "
                               "others) | dot | cosine (bpr only: softplus(cos_j - cos_i), IR-Benchmark's BPR with --norm)")
    embedding_init: str = _key("embedding.init", "xavier", choices=("xavier", "normal"),
                               doc="xavier: Xavier-uniform tables (LightGCN's); normal: N(0, 1) (torch's nn.Embedding "
                                   "default, IR-Benchmark's MF for the softmax losses)")
    device: str = _key("device", "auto", doc="auto | cpu | cuda | cuda:N")
    seed: int = _key("seed", 2025, minimum=0, maximum=SEED_MAX, doc="seeds python, numpy, torch and numba "
                     "(0 to 2^32 - 1: numpy's and numba's seeds and torch's CPU generator are 32-bit)")
    selection: str = _key("selection", "auto", choices=SELECTION_RULES, doc="model-selection rule (auto: the sampler's, else valid if a validation file exists; "
                             "reference: the baselines' reference code, best test selection.metric, a test-set protocol)")
    selection_metric: str = _key("selection.metric", "Recall@20", doc="metric of the valid and reference rules")
    selection_test: Optional[str] = _key("selection.test", None, doc="test file of test_all4 and reference (default test_ood, else the first)")
    patience: int = _key("early_stop.patience", 10, minimum=0,
                         doc="evaluations without improvement before stopping (valid, reference); 0 = off")
    min_epochs: int = _key("early_stop.min_epochs", 0, minimum=0,
                           doc="no early stop before this many epochs (an earlier epoch can still be selected); "
                               "0 = off")
    halt_after: int = _key("early_stop.halt_after", 0, minimum=0,
                           doc="stop after this many epochs whatever validation says (a rung of successive halving: "
                               "unlike a smaller max.epoch it changes nothing before it; --resume --set "
                               "early_stop.halt_after=0 continues the run); 0 = off")
    eval_first: int = _key("eval.first", 1, minimum=1, doc="the first evaluated epoch F (1-based): then F+N, F+2N, ... "
                           "(eval.every N) and the last; 1 is the baselines' references' `epoch % N == 0`, N is "
                           "IR-Benchmark's `(epoch + 1) % N == 0`")
    eval_every: int = _key("eval.every", 1, minimum=1, doc="evaluate after epochs 1, 1+N, 1+2N, ... and the last "
                           "(the reference code's `epoch % N == 0`); selection and patience see only these")
    stop_watch: list[str] = _key("early_stop.files", [], doc="more eval files whose selection.metric must also "
                                 "have stalled before stopping (e.g. ood_valid)")
    eval_mask: str = _key("eval.mask", "train_valid", choices=("train_valid", "train"),
                          doc="items masked when ranking for tests; validation always masks train only")
    pop_penalty: float = _key("eval.pop_penalty", 0.0, minimum=0.0,
                              doc="rank by score - gamma * log(1 + training degree) (a post-hoc depopularisation)")
    eval_users: str = _key("eval.users", "test", choices=("test", "all"),
                           doc="the users a metric is averaged over: test (those with items in the file, SELFRec's) | "
                               "all (every user of the data, one without test items counting 0: IR-Benchmark's)")
    eval_batch_users: int = _key("eval.batch.users", 2048, minimum=1, doc="users per evaluation batch")
    fhn_probe: int = _key("fhn.probe", 4096, minimum=0,
                          doc="training pairs probed for false hard negatives after each epoch; 0 = off")
    output: Path = _key("output", Path("results"), doc="folder of the run folders")
    log_dir: Path = _key("log.dir", Path("log"), doc="folder of a second copy of each run's log")
    checkpoint_keep: str = _key("checkpoint.keep", "last", choices=("last", "best", "all"),
                                doc="last: checkpoint.pt only; best: also best.pt (the selected epoch); "
                                    "all: also epoch-NNN.pt per epoch")
    params: Any = None  # dataclass instance of the active sampler's parameters (conf/params.py)
    loss_params: Any = None  # dataclass instance of the active loss's parameters (None for bpr)
    other_params: dict[str, Any] = field(default_factory=dict)  # explicitly overridden, inactive samplers
    source: dict[str, Any] = field(default_factory=dict)  # the flat key -> value input it was resolved from
    layers: dict[str, str] = field(default_factory=dict)  # every key (and params.SAMPLER.FIELD) -> where its value came from
    record: dict[str, Any] = field(default_factory=dict)  # the run's record keys (RECORD_CHECKED), set by SELFRec
    resumed_at: str = ""  # on --resume, the commit of the code now running where it is not the record's (SELFRec)

    def data_name(self) -> str:
        """The preset's name, else the training file's folder: the dataset part of a run folder's name."""
        return self.dataset or (self.training_set.parent.name if self.training_set else "") or "data"

    def run_tag(self) -> str:
        """model-sampler[.preset]-dataset-sSEED: the start of a run folder's name."""
        sampler = self.negative_sampler
        preset = getattr(self.params, "preset", None)
        if preset:
            sampler = f"{sampler}.{preset}"
        return f"{self.model_name}-{sampler}-{self.data_name()}-s{self.seed}"

    # ---- derived helpers -------------------------------------------------------------
    def eval_files(self) -> dict[str, Path]:
        """Evaluation files in order: 'valid' first (if any), then the tests."""
        files = {"valid": self.valid_set} if self.valid_set else {}
        files.update(self.test_set)
        return files

    def data_arguments(self) -> dict[str, Any]:
        """The arguments of data.dataset.load_data: paths and reading options (data/ takes no config object)."""
        return {"training_set": self.training_set, "eval_files": self.eval_files(), "data_format": self.data_format,
                "min_weight": self.min_weight, "eval_mask": self.eval_mask, "preset": self.dataset,
                "dataset_root": self.dataset_root}

    def selection_rule(self) -> str:
        """The rule that will select the reported epoch ('valid' or 'test_all4')."""
        requested = self.selection
        if requested == "auto":
            requested = getattr(self.params, "selection", None) or "auto"
        if requested == "valid" and self.valid_set is None:
            raise ConfigError("selection: 'valid' needs a validation file (valid.set)")
        if requested == "auto":
            return "valid" if self.valid_set is not None else "test_all4"
        return requested

    def to_dict(self) -> dict[str, Any]:
        """The resolved config keyed as in the YAML file (for config.json)."""
        out: dict[str, Any] = {}
        for f in fields(self):
            if "key" in f.metadata:
                value = getattr(self, f.name)
                if isinstance(value, Path):
                    value = repo_relative(value)
                elif isinstance(value, dict):
                    value = {k: repo_relative(v) if isinstance(v, Path) else str(v) for k, v in value.items()}
                out[f.metadata["key"]] = value
        out["selection.resolved"] = self.selection_rule()
        out["input"] = self.source
        out["params"] = {self.negative_sampler: dataclasses.asdict(self.params)}
        if self.loss_params is not None:
            out["params"][self.loss_name] = dataclasses.asdict(self.loss_params)
        for name, obj in self.other_params.items():
            out["params"][name] = dataclasses.asdict(obj)
        return out


KEYS: dict[str, dataclasses.Field] = {f.metadata["key"]: f for f in fields(RunConfig) if "key" in f.metadata}
MAP_KEYS = {"test.set"}


def flatten(tree: dict, prefix: str = "") -> dict[str, Any]:
    """Turn nested YAML sections into dotted keys (model: {name: X} -> model.name)."""
    out: dict[str, Any] = {}
    for k, v in tree.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and key not in MAP_KEYS:
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


def parse_override(text: str) -> tuple[str, str]:
    """Split 'key=value' from the command line."""
    if "=" not in text:
        raise ConfigError(f"--set {text!r}: expected KEY=VALUE")
    key, value = text.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(f"--set {text!r}: empty key")
    return key, value.strip()


class _UniqueKeyLoader(yaml.SafeLoader):
    """A safe YAML loader for which a key given twice in one mapping is an error."""

    def construct_mapping(self, node, deep=False):  # type: ignore[override]
        seen: dict[Any, Any] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r} (first on line {seen[key] + 1})", key_node.start_mark)
            seen[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep=deep)


def read_yaml(path: Path) -> dict[str, Any]:
    """Read a YAML config file into a mapping; errors name the file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        tree = yaml.load(path.read_text(encoding="utf-8"), Loader=_UniqueKeyLoader)
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text ({exc.reason})") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {' '.join(str(exc).split())}") from None
    if tree is None:
        return {}
    if not isinstance(tree, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of keys, got {type(tree).__name__}")
    return tree


SHIPPED = REPO / "conf" / "LightGCN.yaml"


def load_config(path: Optional[Path], overrides: Sequence[str] = ()) -> RunConfig:
    """Read the YAML file (if any), apply KEY=VALUE overrides, and resolve a RunConfig."""
    flat = flatten(read_yaml(path)) if path is not None else {}
    origin = {key: repo_relative(Path(path).resolve()) for key in flat} if path is not None else {}
    # what the user chose: the overrides, and every key of a config file other than the shipped one
    chosen = set(flat) if path is not None and Path(path).resolve() != SHIPPED.resolve() else set()
    for text in overrides:
        key, value = parse_override(text)
        chosen.add(key)
        origin["test.set" if key.startswith("test.set.") else key] = "--set"
        set_key(flat, key, value)
    return resolve(flat, chosen, origin)


def set_key(flat: dict[str, Any], key: str, value: Any) -> None:
    """flat[key] = value; a `test.set.NAME` key sets one file of the test.set mapping."""
    if not key.startswith("test.set."):
        flat[key] = value
        return
    current = flat.get("test.set") or {}
    if not isinstance(current, dict):
        current = coerce("test.set", current, dict[str, Path])
    flat["test.set"] = {**current, key[len("test.set."):]: value}


def resolve(flat: dict[str, Any], chosen: Optional[set[str]] = None,
            origin: Optional[dict[str, str]] = None) -> RunConfig:
    """Validate and coerce a flat key -> value mapping into a RunConfig. chosen: the keys the user gave
    (None: all of them); a preset next to training.set is warned about only when the user chose it.
    origin: where each raw key came from (a config file, --set), for RunConfig.layers."""
    values: dict[str, Any] = {}
    param_values: dict[str, Any] = {}
    for key, raw in flat.items():
        if key == "params":
            if raw not in (None, {}):
                raise ConfigError(f"params: expected a mapping of settings, got {raw!r}")
            continue
        if key.startswith("params."):
            param_values[key] = raw
            continue
        if key not in KEYS:
            raise ConfigError(f"unknown config key {key!r}{suggest(key, KEYS)}")
        f = KEYS[key]
        value = coerce(key, raw, typing.get_type_hints(RunConfig)[f.name])
        _check(key, value, f)
        values[f.name] = value
    cfg = RunConfig(**values)
    _apply_preset(cfg, explicit=set(values), chosen=chosen is None or "dataset" in chosen)
    _anchor_paths(cfg)
    if cfg.training_set is None:
        raise ConfigError("no training data: set `dataset` to a preset or `training.set` to a file")
    if not cfg.test_set:
        raise ConfigError("no test file: set `test.set` (a path, a list, or a mapping name: path)")
    cfg.params, cfg.other_params = resolve_params(cfg.negative_sampler, param_values)
    if cfg.loss_name in LOSS_PARAMS:
        cfg.loss_params = cfg.other_params.pop(cfg.loss_name, None) or build_params(
            cfg.loss_name, LOSS_PARAMS[cfg.loss_name], {})
    if cfg.reg_form == "auto":  # the softmax family's references regularise by Adam's weight decay
        cfg.reg_form = "weight_decay" if cfg.loss_name != "bpr" else REFERENCE_REG_FORM.get(cfg.negative_sampler,
                                                                                             "lightgcn")
    if cfg.loss_score == "auto":
        cfg.loss_score = "dot" if cfg.loss_name == "bpr" else "cosine"
    elif cfg.loss_score == "dot" and cfg.loss_name != "bpr":
        raise ConfigError(f"loss.score: dot is for bpr only; {cfg.loss_name}'s temperatures are on the scale of cos/2 "
                          f"(docs/losses.md)")
    if cfg.eval_first > cfg.max_epoch:
        raise ConfigError(f"eval.first: {cfg.eval_first} is after the last epoch (max.epoch {cfg.max_epoch})")
    _check_selection(cfg)
    cfg.source = _relative_paths(flat)
    cfg.layers = _layers(cfg, flat, origin or {}, explicit=set(values))
    return cfg


PATH_KEYS = ("dataset.root", "training.set", "valid.set", "test.set", "output", "log.dir")
BUILT_IN, PARAMS_FILE = "default (conf/config.py)", "default (conf/params.py)"


def _relative_paths(flat: dict[str, Any]) -> dict[str, Any]:
    """The input as config.json keeps it: absolute paths of PATH_KEYS rewritten relative to the repository
    root (they resolve against it, so the meaning is the same, and no machine's path is recorded)."""
    def rel(value: Any) -> Any:
        if isinstance(value, (str, Path)) and "," not in str(value) and os.path.isabs(str(value)):
            return repo_relative(Path(value))
        if isinstance(value, list):
            return [rel(v) for v in value]
        if isinstance(value, dict):
            return {k: rel(v) for k, v in value.items()}
        return value
    return {k: rel(v) if k in PATH_KEYS else v for k, v in flat.items()}


def _layers(cfg: RunConfig, flat: dict[str, Any], origin: dict[str, str], explicit: set[str]) -> dict[str, str]:
    """Where every resolved value came from: a config file, --set, the run's record, the dataset preset, the
    CNSDiff preset, or the built-in defaults of conf/config.py and conf/params.py."""
    from conf.params import CNSDIFF_SWITCHES
    given = lambda key: origin.get(key, "input")  # noqa: E731 (a flat mapping with no origin: config_of_run's)
    out: dict[str, str] = {}
    filled = {"training.set", "valid.set", "test.set", "data.format"}
    for key, f in KEYS.items():
        if key == "reg.form" and str(flat.get(key, "auto")).strip().lower() == "auto":
            out[key] = "conf/params.py REFERENCE_REG_FORM (reg.form: auto)"
        elif key in flat:
            out[key] = given(key)
        elif cfg.dataset is not None and key in filled and f.name not in explicit:
            out[key] = f"dataset preset {cfg.dataset}"
        else:
            out[key] = BUILT_IN
    owners = {cfg.negative_sampler: cfg.params, **cfg.other_params}
    if cfg.loss_params is not None:
        owners[cfg.loss_name] = cfg.loss_params
    for owner, params in owners.items():
        for name in params.__dataclass_fields__:
            key = f"params.{owner}.{name}"
            short = f"params.{name}" if owner == cfg.negative_sampler else None
            if key in flat:
                out[key] = given(key)
            elif short in flat:
                out[key] = given(short)
            elif owner == "cnsdiff" and name in CNSDIFF_SWITCHES:
                out[key] = f"params.cnsdiff.preset {params.preset}"
            else:
                out[key] = PARAMS_FILE
    return out


def not_default(cfg: RunConfig) -> list[str]:
    """`key = value (layer)` for every value that is not a built-in default: what the run's log lists."""
    resolved = cfg.to_dict()
    values = {**resolved, **_params_flat(resolved)}
    return [f"{key} = {values.get(key)} ({layer})" for key, layer in cfg.layers.items()
            if layer not in (BUILT_IN, PARAMS_FILE)]


def config_of_run(run_dir: Path, overrides: Sequence[str] = ()) -> RunConfig:
    """The RunConfig a run folder was started with (re-resolved from the input stored in its config.json).
    overrides: KEY=VALUE of STOP_KEYS only, each at least the run's value, to continue a run that stopped
    early under a longer stopping rule (what it computed so far is what a run with that rule computes)."""
    path = Path(run_dir) / "config.json"
    if not path.is_file():
        raise ConfigError(f"--resume: {run_dir} is not a run folder (no config.json)")
    try:
        stored = json.loads(path.read_text(encoding="utf-8"))
        flat = dict(stored["input"])
    except (ValueError, KeyError) as exc:
        raise ConfigError(f"--resume: {path} is unreadable or has no 'input' section ({exc})") from None
    checkpoint = Path(run_dir) / "checkpoint.pt"
    if checkpoint.is_file():  # config.json must still be the run's record before it is resolved again
        check_record(run_dir, read_checkpoint(checkpoint, "cpu"))
    given: set[str] = set()
    origin = {key: RECORD for key in flat}
    for text in overrides:
        key, value = parse_override(text)
        if key not in STOP_KEYS:
            raise ConfigError(f"--resume continues a run with its own config; --set can only lengthen its stopping "
                              f"rule ({', '.join(STOP_KEYS)}), not {key}")
        flat[key] = value
        given.add(key)
        origin[key] = "--set"
    config = resolve(flat, origin=origin)
    pinned = _differences(stored, config, skip=given)
    if pinned:  # today's defaults (conf/params.py, conf/config.py) differ from what the run started with
        data = sorted(k for k in pinned if k in DATA_KEYS)
        if data:
            raise ConfigError(f"--resume: the dataset preset now gives other data settings than {path} records "
                              f"({', '.join(f'{k}: recorded {stored.get(k)!r}, now {config.to_dict().get(k)!r}' for k in data)}); "
                              f"start a new run")
        now = {**config.to_dict(), **_params_flat(config.to_dict())}
        log.warning("resuming with the values the run started with, where today's defaults differ: %s",
                    "; ".join(f"{k} recorded {v!r}, today {now.get(k)!r}" for k, v in sorted(pinned.items())))
        config = resolve({**flat, **pinned}, origin={**origin, **{k: f"{RECORD}, pinned" for k in pinned}})
        config.source = _relative_paths(flat)  # config.json's input stays the run's own
        left = _differences(stored, config, skip=given)
        if left:
            raise ConfigError(f"--resume: {path} records settings that cannot be restored today "
                              f"({', '.join(sorted(left))}); start a new run")
    recorded = {**stored, **_params_flat(stored)}
    unrecorded = sorted(k for k in config.layers if k not in recorded)
    if unrecorded:
        log.warning("not in the run's record (keys added since it started; today's values are used): %s",
                    ", ".join(unrecorded))
    for key in STOP_KEYS:
        old, new = stored.get(key, 0), config.to_dict()[key]
        if rule_length(key, new) < rule_length(key, old):
            where = f"--set {key}={new}" if key in given else f"{key} {new} in the input section of {path}"
            raise ConfigError(f"--resume: {where} is below the run's {old}; a stopping rule can only be "
                              f"lengthened (a shorter one would have stopped the run earlier)")
    return config


RECORD = "run record (config.json)"
DATA_KEYS = ("dataset", "training.set", "valid.set", "test.set", "data.format")
UNPINNED = ("input", "selection.resolved", "params")  # derived or compared by their parts


def _params_flat(record: dict[str, Any]) -> dict[str, Any]:
    """A config.json `params` section as params.SAMPLER.FIELD keys."""
    return {f"params.{owner}.{name}": value for owner, fields_ in (record.get("params") or {}).items()
            for name, value in fields_.items()}


def _differences(stored: dict[str, Any], config: RunConfig, skip: set[str]) -> dict[str, Any]:
    """The recorded value of every resolved key (and sampler setting) that today's resolution of a run's input
    gives differently; record-only keys, the input section and the keys in skip aside."""
    now = config.to_dict()
    recorded = {k: v for k, v in stored.items() if k not in RECORD_ONLY and k not in UNPINNED}
    recorded.update(_params_flat(stored))
    today = {k: v for k, v in now.items() if k not in UNPINNED}
    today.update(_params_flat(now))
    normal = lambda v: json.loads(json.dumps(v, default=str))  # noqa: E731 (tuples as lists, paths as text)
    return {k: v for k, v in recorded.items() if k not in skip and k in today and normal(today[k]) != normal(v)}


def _check(key: str, value: Any, f: dataclasses.Field) -> None:
    choices, minimum = f.metadata["choices"], f.metadata["min"]
    if choices and value is not None and value not in choices:
        raise ConfigError(f"{key}: {value!r} is not one of {', '.join(choices)}")
    maximum = f.metadata["max"]
    for v in value if isinstance(value, list) else [value]:
        if v is None:
            continue
        below = minimum is not None and v < minimum
        if maximum is not None and (below or v > maximum):  # a key with a maximum names its whole range
            span = f"{minimum} to {maximum}" if minimum is not None else f"at most {maximum}"
            raise ConfigError(f"{key}: {v!r} is outside the allowed range {span}")
        if below:
            raise ConfigError(f"{key}: {v!r} is below the minimum {minimum}")
    if f.metadata.get("positive") and value is not None and not value > 0:
        raise ConfigError(f"{key}: {value!r} must be > 0")


def _apply_preset(cfg: RunConfig, explicit: set[str], chosen: bool = True) -> None:
    """Fill the file keys from the dataset preset. When training.set is given the preset supplies
    nothing (it is ignored: a warning when the user chose the preset, else a log line); other file keys
    given next to a preset replace its own."""
    if cfg.dataset is None:
        return
    preset = get_preset(cfg.dataset)
    if "training_set" in explicit:
        (log.warning if chosen else log.info)(
            "dataset: preset %r ignored because training.set is given (the preset supplies no file, "
            "format or name; give valid.set, test.set and data.format yourself)", preset.name)
        cfg.dataset = None
        return
    cfg.dataset = preset.name
    folder = cfg.dataset_root / preset.name
    cfg.training_set = folder / preset.train
    if "valid_set" not in explicit and preset.valid:
        cfg.valid_set = folder / preset.valid
    if "test_set" not in explicit:
        cfg.test_set = {name: folder / file for name, file in preset.tests.items()}
    if "data_format" not in explicit:
        cfg.data_format = preset.format


def repo_relative(path: Path) -> str:
    """A path as written to config.json: relative to the repository root (no machine's absolute path)."""
    try:
        return os.path.relpath(path, REPO)
    except ValueError:  # another drive (Windows)
        return str(path)


def _anchor(path: Optional[Path]) -> Optional[Path]:
    return path if path is None or path.is_absolute() else REPO / path


def _anchor_paths(cfg: RunConfig) -> None:
    """Relative paths resolve against the repository root, whatever the working directory."""
    cfg.dataset_root = _anchor(cfg.dataset_root)
    cfg.training_set = _anchor(cfg.training_set)
    cfg.valid_set = _anchor(cfg.valid_set)
    cfg.test_set = {name: _anchor(path) for name, path in cfg.test_set.items()}
    cfg.output = _anchor(cfg.output)
    cfg.log_dir = _anchor(cfg.log_dir)


def _same_content(a: Optional[Path], b: Optional[Path]) -> bool:
    """Whether two existing files are one file or hold the same bytes (False when either is missing)."""
    return a is not None and b is not None and a.is_file() and b.is_file() and filecmp.cmp(a, b, shallow=False)


def _check_selection(cfg: RunConfig) -> None:
    """The selection rule can work with these files and metrics; fills selection.test's default."""
    if "valid" in cfg.test_set:
        raise ConfigError("test.set: the name 'valid' is reserved for the validation file")
    if cfg.selection_test is not None and cfg.selection_test not in cfg.test_set:
        raise ConfigError(f"selection.test: {cfg.selection_test!r} is not a test file name "
                          f"({', '.join(cfg.test_set)})")
    unknown = [f for f in cfg.stop_watch if f not in cfg.eval_files()]
    if unknown:
        raise ConfigError(f"early_stop.files: {unknown} are not eval files ({', '.join(cfg.eval_files())})")
    if cfg.selection_test is None:
        cfg.selection_test = "test_ood" if "test_ood" in cfg.test_set else next(iter(cfg.test_set))
    rule = cfg.selection_rule()  # raises if `valid` is asked for without a validation file
    if rule == "valid":
        for name, path in cfg.test_set.items():
            if _same_content(cfg.valid_set, path):
                raise ConfigError(f"valid.set is the same file as test.set.{name} ({repo_relative(path)}): selecting "
                                  f"on it would select on the test set; give a separate validation file, or ask for a "
                                  f"test-set protocol by name (selection: test_all4 or reference)")
    metric, _, k = cfg.selection_metric.partition("@")
    if rule in ("valid", "reference") and (metric not in ("Recall", "NDCG", "Precision", "Hit Ratio") or not k.isdigit()
                            or int(k) not in cfg.top_n):
        raise ConfigError(f"selection.metric: {cfg.selection_metric!r} must be Recall|NDCG|Precision|Hit Ratio "
                          f"@K with K in item.ranking.topN {cfg.top_n}")
    if rule == "test_all4" and not {10, 20} <= set(cfg.top_n):
        raise ConfigError("selection: test_all4 compares Recall/NDCG at 10 and 20; item.ranking.topN must hold both")


def resolve_params(sampler: str, param_values: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    """Build the active sampler's params dataclass (and any explicitly set other ones: samplers' and losses')."""
    if sampler not in PARAMS:
        raise ConfigError(f"negative.sampler: unknown sampler {sampler!r}{suggest(sampler, PARAMS)}; "
                          f"valid: {', '.join(PARAMS)}")
    active = PARAMS[sampler]
    grouped: dict[str, dict[str, Any]] = {}
    for key, raw in param_values.items():
        parts = key.split(".")[1:]
        if len(parts) == 2 and (parts[0] in PARAMS or parts[0] in LOSS_PARAMS):
            owner, name = parts
        elif len(parts) == 1:
            owner, name = sampler, parts[0]
        else:
            raise ConfigError(f"unknown config key {key!r}: use params.FIELD (active sampler), params.SAMPLER.FIELD "
                              f"or params.LOSS.FIELD")
        grouped.setdefault(owner, {})[name] = raw
    built: dict[str, Any] = {}
    for owner, kv in grouped.items():
        built[owner] = build_params(owner, PARAMS.get(owner) or LOSS_PARAMS[owner], kv)
    params = built.pop(sampler, None) or build_params(sampler, active, {})
    return params, built


def build_params(owner: str, cls: type, kv: dict[str, Any]) -> Any:
    """Instantiate a params dataclass from raw overrides, coercing each field by its type hint."""
    hints = typing.get_type_hints(cls)
    names = [f.name for f in fields(cls)]
    typed = {}
    for name, raw in kv.items():
        if name not in names:
            raise ConfigError(f"unknown config key 'params.{owner}.{name}'{suggest(name, names)}")
        typed[name] = coerce(f"params.{owner}.{name}", raw, hints[name])
    try:
        return cls(**typed)
    except (ValueError, TypeError) as exc:
        raise ConfigError(str(exc)) from exc
