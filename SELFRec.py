"""SELFRec: load the data once, resolve the model from the registry, run it; keep the run folder's
status (running, finished, failed, interrupted) true whatever happens."""
from __future__ import annotations

import json
import logging
import os
import uuid
from pathlib import Path
from typing import Any, Optional

import torch

from data.dataset import load_data
from data.loader import DataFileError
from conf.config import RunConfig, not_default, repo_relative
from model import get_model_class
from util.device import resolve_device, set_threads
from util.io import WriteError, describe_os_error
from util.logger import add_log_file, remove_log_file
from util.results import (RECORD_CHECKED, RunLock, RunWriter, changed_data, file_fingerprint, make_run_dir,
                          read_status, recorded_threads)
from util.seed import seed_everything
from util.typing_coerce import ConfigError

log = logging.getLogger(__name__)


def git_commit() -> str:
    """The repository's current commit (with '+changes' when the code in the work tree differs), or 'unknown'."""
    import subprocess
    root = Path(__file__).resolve().parent
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True,
                              timeout=10).stdout.strip()
        # changes to code, not to the tracked run records under results/
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ".", ":!results"], cwd=root,
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return (head + ("+changes" if dirty else "")) if head else "unknown"


class Interrupted(BaseException):
    """The run was stopped by Ctrl-C (exit 130) or SIGTERM (exit 143); its checkpoint is kept. A BaseException,
    like KeyboardInterrupt, so that no library's `except Exception` swallows it."""

    def __init__(self, exit_code: int, signal_name: str):
        super().__init__(signal_name)
        self.exit_code, self.signal_name = exit_code, signal_name


def writable_folder(path: Path, key: str) -> Path:
    """Create path if needed; a path that is a file, or a folder that cannot be written, is a ConfigError."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise ConfigError(f"{key}: {path} exists and is not a folder") from None
    except OSError as exc:
        raise ConfigError(f"{key}: cannot create the folder {path} ({describe_os_error(exc, path)})") from None
    if not path.is_dir():
        raise ConfigError(f"{key}: {path} exists and is not a folder")
    if not os.access(path, os.W_OK | os.X_OK):
        raise ConfigError(f"{key}: the folder {path} is not writable")
    return path


class SELFRec:
    """One run: a resolved config in, a run folder (results/<run>/, with run.log) and log/<run>.log out."""

    def __init__(self, config: RunConfig, resume: Optional[Path] = None, threads: Optional[int] = None):
        self.config = config
        self.resume = Path(resume) if resume is not None else None
        self.threads = threads  # --threads when given: a resume without it uses the count the run started with
        self.model_class = get_model_class(config.model_name)
        self.device = resolve_device(config.device)

    def _resume_threads(self, run_dir: Path) -> None:
        """Resume with the CPU thread count the run started with: a different count changes the order of
        torch's parallel sums, and so the last digits of what follows."""
        recorded = recorded_threads(run_dir)
        if recorded is None or recorded == torch.get_num_threads():
            return
        if self.threads is None:
            set_threads(recorded)
            log.info("resuming with %d CPU thread(s), as the run started (--threads N to change)", recorded)
        else:
            log.warning("the run started with %d CPU thread(s) and resumes with %d (--threads): the rest of the run "
                        "may differ from an uninterrupted one in its last digits", recorded, self.threads)

    @staticmethod
    def _check_data(run_dir: Path, record: dict[str, Any], files: dict[str, Path]) -> None:
        """A resume reads the data files the run started with (their recorded sha256), else a ConfigError."""
        if "data.files" not in record:
            log.info("no data fingerprint in %s (a run from before they were recorded): the data is not checked",
                     run_dir / "config.json")
            return
        recorded = record["data.files"]
        same = {name: path for name, path in files.items()  # another path is an edited config: check_record says so
                if name in recorded and recorded[name].get("path") == repo_relative(path)}
        changed = changed_data(recorded, same)
        if changed:
            raise ConfigError(f"--resume: the data changed since the run started: {'; '.join(changed)}; a resume "
                              f"needs the same files: put them back, or start a new run")

    def execute(self) -> dict[str, Any]:
        """Train and evaluate; returns what metrics.json holds."""
        cfg = self.config
        self.model_class.check_config(cfg)
        writable_folder(cfg.log_dir, "log.dir")
        if self.resume is None:
            run_dir = make_run_dir(writable_folder(cfg.output, "output"), self.model_class.run_tag(cfg))
        else:
            run_dir = self.resume
            if self.model_class.checkpointed and not (run_dir / "checkpoint.pt").is_file():
                raise ConfigError(f"--resume: {run_dir} has no checkpoint.pt (it stopped before its first epoch ended, "
                                  f"or it is a copy without its checkpoints); start it again instead")
        writer = RunWriter(run_dir)
        lock = RunLock(run_dir)
        lock.acquire()  # one trainer per run folder (raises, naming the holder, before anything is written)
        logs = [run_dir / "run.log", cfg.log_dir / f"{run_dir.name}.log"]
        for path in logs:
            add_log_file(path)
        before = writer.status_bytes() if self.resume is not None else None
        recommender = None

        def settle(state: str, message: str) -> None:
            """The status a run ends with; a resume refused before its checkpoint was restored leaves it as it was."""
            try:
                if self.resume is not None and not getattr(recommender, "restored", False):
                    writer.restore_status(before)
                else:
                    writer.write_status(state, message=message)
            except WriteError as exc:  # e.g. the disk is full: the error that ended the run is the one to report
                log.warning("%s (status.json could not say %s)", exc, state)
        try:
            files = {"train": cfg.training_set, **cfg.eval_files()}
            if self.resume is None:
                log.info("run %s | log %s", run_dir.name, logs[0])
                cfg.record = {"device.resolved": str(self.device), "commit": git_commit(),
                              "threads": torch.get_num_threads(), "run_id": uuid.uuid4().hex[:16]}
                writer.write_config({**cfg.to_dict(), **cfg.record})
            else:
                status = read_status(run_dir)
                gone = " (its process is gone: killed, or its machine stopped)" if status.get("state") == "running" else ""
                log.info("resuming run %s (status was %s, epoch %s%s)", run_dir.name, status.get("state"),
                         status.get("epoch", "?"), gone)
                stored = json.loads((run_dir / "config.json").read_text(encoding="utf-8"))
                cfg.record = {k: stored[k] for k in RECORD_CHECKED if k in stored}
                now = git_commit()
                if "commit" in cfg.record and now != cfg.record["commit"]:
                    cfg.resumed_at = now
                    log.warning("resuming run %s, started at commit %s, with the code of commit %s",
                                run_dir.name, cfg.record["commit"], now)
                self._check_data(run_dir, cfg.record, files)
                self._resume_threads(run_dir)
            for line in not_default(cfg):
                log.info("setting %s", line)
            writer.write_status("running")
            data = load_data(**cfg.data_arguments())
            if self.resume is None:  # after loading: the synthetic dataset is generated there on first use
                cfg.record["data.files"] = {name: {"path": repo_relative(path), **file_fingerprint(path)}
                                            for name, path in files.items()}
                writer.write_config({**cfg.to_dict(), **cfg.record})
            if max(cfg.top_n) > data.n_items:
                raise ConfigError(f"item.ranking.topN: {max(cfg.top_n)} is more than the {data.n_items} items of the "
                                  f"data; use cut-offs up to {data.n_items}")
            seed_everything(cfg.seed)
            recommender = self.model_class(cfg, data, self.device, run_dir, resume=self.resume is not None)
            result = recommender.execute()
            writer.write_status("finished", epoch=result["selection"]["epochs_run"])
            return result
        except Interrupted as exc:
            if self.model_class.checkpointed and not (run_dir / "checkpoint.pt").is_file():
                log.warning("interrupted by %s before the first epoch finished: nothing is checkpointed, so there is "
                            "nothing to resume; start the run again (%s can be deleted)", exc.signal_name, run_dir)
                settle("interrupted", f"{exc.signal_name}, before the first epoch finished: nothing to resume")
            else:
                log.warning("interrupted by %s; the last finished epoch is checkpointed: resume with "
                            "python main.py --resume %s", exc.signal_name, run_dir)
                settle("interrupted", exc.signal_name)
            raise
        except BaseException as exc:
            message = str(exc) or type(exc).__name__
            settle("failed", message)
            if isinstance(exc, (ConfigError, DataFileError, FileNotFoundError)) or getattr(exc, "user_error", False):
                log.error("%s", message)
                exc.logged = True  # type: ignore[attr-defined]
            else:
                log.exception("run failed with an unexpected error (a bug): %s", message)
            raise
        finally:
            for path in logs:
                remove_log_file(path)
            lock.release()
