"""Logging set-up (configured once, by main.py) and a small progress indicator."""
from __future__ import annotations

import logging
import sys
import time
from pathlib import Path
from typing import Optional, TextIO

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def setup_logging(log_file: Optional[Path] = None, level: int = logging.INFO) -> None:
    """Configure the root logger: a console handler and, optionally, a log file."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, "_ours", False):  # leave handlers of others (e.g. pytest) alone
            root.removeHandler(handler)
            handler.close()
    root.setLevel(level)
    console = logging.StreamHandler(sys.stderr)
    console.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%H:%M:%S"))
    console._ours = True  # type: ignore[attr-defined]
    root.addHandler(console)
    if log_file is not None:
        add_log_file(log_file)


class _QuietFileHandler(logging.FileHandler):
    """A file handler that drops a record it cannot write (a full disk) instead of printing a traceback: the
    console still shows the record, and the run's own error says what failed."""

    def handleError(self, record: logging.LogRecord) -> None:  # noqa: N802 (logging's name)
        """Ignore the failed write."""


def add_log_file(log_file: Path) -> None:
    """Attach a file handler to the root logger (the run's human-readable log)."""
    log_file = Path(log_file)
    log_file.parent.mkdir(parents=True, exist_ok=True)
    handler = _QuietFileHandler(log_file, encoding="utf-8")
    handler.setFormatter(logging.Formatter(FORMAT))
    handler._ours = True  # type: ignore[attr-defined]
    logging.getLogger().addHandler(handler)


def remove_log_file(log_file: Path) -> None:
    """Detach and close the file handler writing to log_file, if any."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        if isinstance(handler, logging.FileHandler) and Path(handler.baseFilename) == Path(log_file).resolve():
            root.removeHandler(handler)
            handler.close()


class Progress:
    """A one-line progress indicator on a terminal; silent when output is not a terminal."""

    def __init__(self, label: str, total: int, stream: TextIO = sys.stderr, min_interval: float = 0.2):
        self.label = label
        self.total = max(int(total), 1)
        self.stream = stream
        self.enabled = hasattr(stream, "isatty") and stream.isatty()
        self.min_interval = min_interval
        self._last = 0.0

    def update(self, done: int) -> None:
        """Redraw the line if enough time passed since the last redraw."""
        if not self.enabled:
            return
        now = time.perf_counter()
        if now - self._last < self.min_interval and done < self.total:
            return
        self._last = now
        width = 30
        filled = int(width * done / self.total)
        bar = "#" * filled + "-" * (width - filled)
        self.stream.write(f"\r{self.label} [{bar}] {done}/{self.total}")
        self.stream.flush()

    def close(self) -> None:
        """Clear the progress line."""
        if self.enabled:
            self.stream.write("\r" + " " * (len(self.label) + 50) + "\r")
            self.stream.flush()
