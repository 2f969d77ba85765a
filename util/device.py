"""Resolve the one torch.device of a run from `auto|cpu|cuda|cuda:N`, set its CPU threads, and say how much
memory it has for a run's tables."""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Optional

import torch

from util.draws import set_draw_threads
from util.typing_coerce import ConfigError


# Take the GPU code paths on the CPU too (tests/test_gpu_path.py: it counts their host read-backs there). The
# CPU-only paths (numba kernels, a row count read back per pass) cost nothing on the CPU and are bit-identical
# to what every CPU number of this repository was made with.
FORCE_DEVICE_PATHS = False


def host_path(tensor: torch.Tensor) -> bool:
    """Whether a computation on `tensor` takes its CPU-only path: it lies on the CPU (and the GPU paths are not
    forced)."""
    return host_device(tensor.device)


def host_device(device: torch.device) -> bool:
    """Whether work for `device` takes its CPU-only path: it is the CPU (and the GPU paths are not forced)."""
    return device.type == "cpu" and not FORCE_DEVICE_PATHS


def resolve_device(spec: str) -> torch.device:
    """Turn a device spec into a torch.device; error if a GPU is asked for but absent."""
    spec = str(spec).strip().lower()
    if spec == "auto":
        return torch.device("cuda:0" if torch.cuda.is_available() else "cpu")
    if spec == "cpu":
        return torch.device("cpu")
    match = re.fullmatch(r"cuda(?::(\d+))?", spec)
    if match is None:
        raise ConfigError(f"device: {spec!r} is not one of auto, cpu, cuda, cuda:N")
    if not torch.cuda.is_available():
        raise ConfigError(f"device: {spec!r} was asked for but no CUDA GPU is available (use auto or cpu)")
    index = int(match.group(1) or 0)
    if index >= torch.cuda.device_count():
        raise ConfigError(f"device: {spec!r} but only {torch.cuda.device_count()} GPU(s) exist")
    return torch.device(f"cuda:{index}")


def set_threads(n: int) -> None:
    """Use n CPU threads for torch and for the parallel candidate draws (main.py's --threads)."""
    if n < 1:
        raise ConfigError(f"--threads: {n} must be >= 1")
    torch.set_num_threads(n)
    set_draw_threads(n)


UNLIMITED = 2**60  # a cgroup "limit" at least this large means no limit


def _meminfo() -> dict[str, int]:
    """/proc/meminfo in bytes ({} where there is none)."""
    out = {}
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            name, _, rest = line.partition(":")
            parts = rest.split()
            if parts and parts[0].isdigit():
                out[name] = int(parts[0]) * (1024 if parts[1:] == ["kB"] else 1)
    except OSError:
        return {}
    return out


def _cgroup_limit() -> Optional[int]:
    """The memory limit of this process's cgroup (v2 memory.max, else v1 memory.limit_in_bytes), None if unlimited."""
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            text = Path(path).read_text().strip()
        except OSError:
            continue
        if text.isdigit() and int(text) < UNLIMITED:
            return int(text)
    return None


def available_memory(device: torch.device) -> tuple[Optional[int], str]:
    """Bytes a run can still allocate on device, and where that number comes from: on CUDA the device's free
    memory; on the CPU MemAvailable + SwapFree (or the free pages sysconf reports), at most the cgroup's limit.
    (None, why) when it cannot be told."""
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return int(free), f"free on {device} ({torch.cuda.get_device_name(device)})"
    info = _meminfo()
    if "MemAvailable" in info:
        free, where = info["MemAvailable"] + info.get("SwapFree", 0), "available (MemAvailable + SwapFree)"
    else:
        try:
            free, where = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"), "free (sysconf)"
        except (ValueError, OSError, AttributeError):
            return None, "unknown"
    limit = _cgroup_limit()
    if limit is not None and limit < free:
        return limit, "the cgroup's memory limit"
    return free, where


def human_bytes(n: float) -> str:
    """A byte count in binary units: 512 B, 3.0 KiB, 1.5 GiB, 11.2 TiB."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if abs(n) < 1024 or unit == "PiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} EiB"
