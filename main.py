"""Command line: python main.py [-c conf/LightGCN.yaml] [--set KEY=VALUE ...] | --resume RUN_DIR | --list

--resume RUN_DIR --set early_stop.min_epochs=N (or early_stop.patience=N) continues a run that stopped early
under a longer stopping rule, exactly as a run started with it would have gone on.

Exit status: 0 done; 2 a problem with the configuration, the data or the environment (one line, also in
the run's log when the run folder exists); 3 training diverged; 130 / 143 interrupted by Ctrl-C / SIGTERM
(the last finished epoch is checkpointed: resume it; before the first epoch ends there is nothing to resume).
Any other error is a bug and shows its traceback.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
from pathlib import Path
from typing import Any

from base.graph_recommender import DivergedError
from conf.config import KEYS, REPO, RunConfig, config_of_run, flatten, load_config, read_yaml, repo_relative
from conf.params import LOSS_PARAMS
from model import MODELS
from data.loader import DataFileError
from data.presets import PRESETS
from module.losses import LOSSES
from module.samplers import SAMPLERS
from SELFRec import SELFRec, Interrupted
from util.device import set_threads
from util.logger import setup_logging
from util.signals import hold
from util.typing_coerce import ConfigError

log = logging.getLogger("main")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command-line arguments."""
    parser = argparse.ArgumentParser(description="Train and evaluate a SELFRec-style recommender (CNSDiff reproduction).")
    parser.add_argument("-c", "--config", type=Path, default=None,
                        help="YAML config file (default conf/LightGCN.yaml; a relative path is looked up in the working "
                             "directory, then in the repository)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config key, e.g. --set max.epoch=5 --set params.n_negs=2 (repeatable)")
    parser.add_argument("--resume", type=Path, metavar="RUN_DIR",
                        help="continue an interrupted or failed run from its last finished epoch (with --set "
                             "early_stop.min_epochs=N / early_stop.patience=N: a longer stopping rule, even for a "
                             "finished run)")
    parser.add_argument("--show-config", action="store_true",
                        help="print the resolved config (JSON) with the layer each value came from, and exit")
    parser.add_argument("--list", action="store_true", help="list samplers, dataset presets and config keys")
    parser.add_argument("--threads", type=int, default=None,
                        help="CPU threads of torch and of the candidate draws (default: all cores)")
    parser.add_argument("--debug", action="store_true", help="show tracebacks for every error")
    return parser.parse_args(argv)


def _config_path(path: Path | None) -> Path:
    """A relative config path: the working directory first, then the repository (default conf/LightGCN.yaml)."""
    if path is None:
        return REPO / "conf" / "LightGCN.yaml"
    if path.is_absolute() or path.exists():
        return path
    return REPO / path


def listing(config_path: Path) -> str:
    """Models, samplers, dataset presets (with whether their files are present) and every config key with the
    default a run gets: the config file's value where it sets one, else the built-in default."""
    defaults = RunConfig()
    try:
        from_file = flatten(read_yaml(config_path))
    except ConfigError:
        from_file = {}
    lines = ["models (model.name):", f"  {', '.join(MODELS)}", "samplers (negative.sampler):"]
    lines += [f"  {name:<8} {cls.description}" for name, cls in SAMPLERS.items()]
    lines.append("losses (loss.name):")
    lines += [f"  {name:<10} {cls.description}" for name, cls in LOSSES.items()]
    lines.append(f"dataset presets (dataset; files under {defaults.dataset_root}/NAME, relative to the repository):")
    for name, preset in PRESETS.items():
        folder = REPO / defaults.dataset_root / name
        present = all((folder / f).is_file() for f in preset.files())
        state = "present" if present else ("generated on first use" if name == "synthetic" else
                                           f"absent: {preset.how_to_get}")
        lines.append(f"  {name:<10} {preset.shift[:60]:<60} {state}")
    lines.append(f"config keys ({repo_relative(Path(config_path).resolve())} or --set KEY=VALUE; default = the file's "
                 f"value, marked *, else the built-in one):")
    for key, f in KEYS.items():
        choices = f" [{'|'.join(f.metadata['choices'])}]" if f.metadata["choices"] else ""
        value = from_file.get(key, getattr(defaults, f.name))
        mark = "*" if key in from_file else " "
        lines.append(f"  {key:<22} {_type_name(f.type):<16} default {value!s:<14}{mark}{choices} {f.metadata['doc']}")
    lines.append("sampler and loss settings (conf/params.py; --set params.SAMPLER.FIELD=VALUE or params.LOSS.FIELD=VALUE; "
                 "* = the config file's):")
    owners = [*SAMPLERS.items(), *((n, c) for n, c in LOSSES.items() if n in LOSS_PARAMS)]
    for name, cls in owners:
        params = cls.Params()
        for field in params.__dataclass_fields__.values():
            key = f"params.{name}.{field.name}"
            value = from_file.get(key, getattr(params, field.name))
            lines.append(f"  {key:<30} {_type_name(field.type):<16} default {value!s}{'*' if key in from_file else ''}")
    return "\n".join(lines)


def _type_name(tp: Any) -> str:
    return str(tp).replace("typing.", "").replace("pathlib.", "").replace("<class '", "").replace("'>", "")


def _on_signal(signum: int, _frame: Any) -> None:
    if hold(signum):  # inside a write or an epoch's bookkeeping: raised when that ends
        return
    name = signal.Signals(signum).name
    raise Interrupted(128 + signum, "Ctrl-C (SIGINT)" if signum == signal.SIGINT else name)


def run(args: argparse.Namespace) -> int:
    """Everything after argument parsing; errors propagate to main()."""
    if args.threads is not None:
        set_threads(args.threads)
    if args.list:
        _print(listing(_config_path(args.config)))
        return 0
    if args.resume is not None:
        if args.config is not None:
            raise ConfigError(f"--resume continues {args.resume} with the config it started with; -c {args.config} "
                              f"would be ignored: drop -c, or start a new run with it")
        config = config_of_run(args.resume, args.overrides)  # --set only lengthens the stopping rule
    else:
        config = load_config(_config_path(args.config), args.overrides)
    if args.show_config:
        _print(json.dumps({**config.to_dict(), "layers": config.layers}, indent=2, default=str))
        return 0
    SELFRec(config, resume=args.resume, threads=args.threads).execute()
    return 0


def _print(text: str) -> None:
    """Print to stdout; a reader that stops early (`| head`) is not an error: the rest is dropped, exit 0."""
    try:
        print(text, flush=True)
    except BrokenPipeError:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # nothing more can be written; do not fail again at exit


def main(argv: list[str] | None = None) -> int:
    """Resolve the config, run, return an exit status (see the module docstring)."""
    args = parse_args(argv)
    setup_logging()
    previous = {sig: signal.signal(sig, _on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        return run(args)
    except Interrupted as exc:
        if args.debug:
            raise
        return exc.exit_code
    except (ConfigError, DataFileError, FileNotFoundError, DivergedError) as exc:
        if args.debug:
            raise
        if not getattr(exc, "logged", False):
            log.error("%s", exc)
        return 3 if isinstance(exc, DivergedError) else 2
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


if __name__ == "__main__":
    sys.exit(main())
