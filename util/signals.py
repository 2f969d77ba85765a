"""Signals held during writes: a SIGINT/SIGTERM whose handler raises must not land inside torch.save or an
epoch's bookkeeping, where the exception would be replaced by a writer error (the run then ends 'failed',
not 'interrupted') or abort the process. Inside `held()` the handler calls `hold(signum)`, which records the
signal; it is raised again when the outermost `held()` block ends."""
from __future__ import annotations

import signal
from contextlib import contextmanager
from typing import Iterator

_depth = 0
_pending = 0  # the first signal held in the current outermost block, 0 for none


def hold(signum: int) -> bool:
    """For a signal handler: True if a `held()` block is running (the signal is recorded for its end)."""
    global _pending
    if _depth:
        _pending = _pending or signum
        return True
    return False


@contextmanager
def held() -> Iterator[None]:
    """Delay signals that arrive inside the block (see `hold`) until it ends; nested blocks end with the outermost."""
    global _depth, _pending
    _depth += 1
    try:
        yield
    finally:
        _depth -= 1
        if not _depth and _pending:
            signum, _pending = _pending, 0
            signal.raise_signal(signum)  # the handler runs now, outside every held block
