"""Command line: python main.py [-c conf/LightGCN.yaml] [--set KEY=VALUE ...]"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import torch

from SELFRec import SELFRec
from data.loader import DataFileError
from conf.config import load_config
from util.logger import setup_logging
from util.typing_coerce import ConfigError

log = logging.getLogger("main")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command-line arguments."""
    parser = argparse.ArgumentParser(description="Train and evaluate a SELFRec-style recommender (CNSDiff reproduction).")
    parser.add_argument("-c", "--config", type=Path, default=Path("conf/LightGCN.yaml"), help="YAML config file")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config key, e.g. --set max.epoch=5 --set params.n_negs=2 (repeatable)")
    parser.add_argument("--show-config", action="store_true", help="print the resolved config and exit")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Resolve the config, run, return an exit status (2 for configuration or data errors)."""
    args = parse_args(argv)
    setup_logging()
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        config = load_config(args.config, args.overrides)
        if args.show_config:
            print(json.dumps(config.to_dict(), indent=2, default=str))
            return 0
        SELFRec(config).execute()
    except (ConfigError, DataFileError, FileNotFoundError) as exc:
        log.error("%s", exc)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
