"""Experiment grids: python -m bench.grid conf/grids/NAME.yaml [--jobs N] [--dry-run] [--datasets A B ...]

A grid names datasets, methods (config keys), seeds, protocols and hyperparameter candidates. Every
cell is a normal `python main.py` run in its own folder under OUT/runs/. Hyperparameters are chosen
per protocol on the protocol's validation data only, with the first seed; the other seeds then run
with the choice (queued as soon as their own pair's first-seed candidates are done). Finished cells are
skipped, interrupted ones resumed from their checkpoint, failed ones recorded with their error (and
retried only with --retry-failed), so running the same command again continues where it stopped and a
finished grid runs nothing.

Before anything runs, every cell that already has a run folder is compared with the configuration the grid gives
it today (record_differences); a grid whose records were made under another configuration is refused, not mixed.
A run holds OUT/.grid.lock (one grid run per folder) and waits for cells another process is still training.

Protocols:
  valid      report the epoch with the best validation Recall@20 (the dataset's IID validation file)
  ood_valid  a seeded per-user split of test_ood into an OOD validation part (ood_valid_fraction of each
             user's rows) and the OOD test part; report the epoch with the best ood_valid Recall@20.
             valid and ood_valid share their runs (early stopping waits for both files) and both report
             on the same OOD test part; each protocol cuts the shared curve where a run stopping on its own
             file alone would have stopped, and breaks ties by NDCG@20, then the earlier epoch; candidates by
             Recall@20, NDCG@20, Recall@10, NDCG@10, then the sorted tag (bench/protocol.py).
  released   the released code's protocol: test_all4 selection on the full test_ood, training items
             masked, no validation file (selects on the test set; one candidate only).
  reference  the baselines' reference code (DENS, MixGCF, AHNS): the epoch with the best Recall@20 on the
             dataset's test file (ties go to the later epoch), early stopping after early_stop.patience
             evaluations without one; set eval.every (5 there) in the grid's keys. For fidelity checks on
             the references' own splits (train and test only); selects on the test set; one candidate only.

The grid file is read by bench/gridfile.py, records are read and compared by bench/records.py, the cells are planned
and run by bench/runner.py (one cell: bench/cells.py), and the dry run's estimate is bench/cost.py.
"""
from __future__ import annotations

import argparse
import logging
import signal
import sys
from pathlib import Path
from typing import Optional

from bench.cells import to_run
from bench.cluster import BACKENDS, INSTALL, Backend, make_backend
from bench.cost import cost_lines
from bench.gridfile import known_dataset, load_grid
from bench.runner import GridLock, GridRunner
from conf.config import REPO
from util.typing_coerce import ConfigError

log = logging.getLogger("bench.grid")


def main(argv: Optional[list[str]] = None) -> int:
    """Command line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("grid", type=Path)
    parser.add_argument("--jobs", type=int,
                        help="cells run at once (each with one torch thread when > 1); default 1, or every worker "
                             "thread of a cluster")
    parser.add_argument("--backend", default="local", choices=BACKENDS,
                        help="where the cells run: local processes (default), or tasks of a Dask cluster (the optional "
                             f"extra: {INSTALL}); the same records either way")
    parser.add_argument("--address",
                        help="with --backend dask: the scheduler (tcp://HOST:PORT, or the file of `dask scheduler "
                             "--scheduler-file FILE`); without it the grid starts --jobs one-thread workers here")
    parser.add_argument("--threads", type=int,
                        help="torch threads per cell (default: 1 with --jobs > 1, else every core; give 1 when "
                             "another grid shares the machine)")
    parser.add_argument("--dry-run", action="store_true",
                        help="list the cells and how many remain, write grid.json; run nothing")
    parser.add_argument("--datasets", nargs="+", help="run the grid on these datasets instead of its own")
    parser.add_argument("--dataset-root", type=Path, default=Path("dataset"))
    parser.add_argument("--out", type=Path, help="default: results/grids/<grid name>")
    parser.add_argument("--retry-failed", action="store_true", help="run failed cells again")
    parser.add_argument("--device", default="cpu",
                        help="every cell's device (cpu, cuda, cuda:N; default cpu, so that a GPU machine does not "
                             "change a grid's device silently); a grid file's keys.device wins")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S")
    lock: Optional[GridLock] = None
    backend: Optional[Backend] = None
    try:
        grid = load_grid(args.grid)
        if args.jobs is not None and args.jobs < 1:
            raise ConfigError(f"--jobs: {args.jobs} must be >= 1")
        if args.threads is not None and args.threads < 1:
            raise ConfigError(f"--threads: {args.threads} must be >= 1")
        for name in args.datasets or []:
            known_dataset(name, "--datasets")
        root = args.dataset_root if args.dataset_root.is_absolute() else Path.cwd() / args.dataset_root
        out = args.out or REPO / "results" / "grids" / grid.name
        if str(args.device).strip().lower() == "auto":
            raise ConfigError("--device: give the device (cpu, cuda, cuda:N), not auto: a grid's records name theirs")
        runner = GridRunner(grid, out, root, args.jobs, args.retry_failed, args.threads, args.device)
        runner.check_owner()
        if not args.dry_run:  # a dry run starts nothing: it may list the cells of a folder a grid is running
            lock = GridLock(out)
            lock.acquire()
            backend = make_backend(args.backend, args.address, args.jobs, out)
            runner.use(backend, args.jobs, args.threads)
        return run(runner, args, " ".join(["python -m bench.grid", *(argv if argv is not None else sys.argv[1:])]))
    except ConfigError as exc:
        log.error("%s", exc)
        return 2
    finally:
        if backend is not None:
            backend.close()
        if lock is not None:
            lock.release()


def run(runner: GridRunner, args: argparse.Namespace, command: str) -> int:
    """Everything after the grid file is read and its folder is this grid's: check the records, then list (dry run)
    or run the cells; the exit status."""
    datasets, skipped = [], {}
    for name in args.datasets or runner.grid.datasets:
        why = runner.available(name)
        if why:
            skipped[name] = why
            log.warning("dataset %s skipped: %s", name, why)
        else:
            datasets.append(name)
    runner.datasets, runner.skipped = datasets, skipped
    differing = runner.differing_cells(datasets)
    for cell_id, found in differing:  # the dry run's listing on stdout; a run's refusal in the log
        line = f"{'differs':<11} {cell_id}: {'; '.join(found)}"
        print(line) if args.dry_run else log.warning("%s", line)
    if differing:
        raise ConfigError(f"{len(differing)} cell(s) under {runner.out} were run under another configuration than "
                          f"{runner.file_shown() or 'the grid'} gives them today (listed above as `differs`); nothing "
                          f"was run and grid.json is unchanged: rerun into a new --out folder, or move the old runs "
                          f"away")
    if args.dry_run:  # runs nothing; grid.json is written, so that a table can be made from the records
        invalid = runner.invalid_cells(datasets)
        for cell_id, message in invalid:
            print(f"invalid     {cell_id}: {message}")
        manifest = runner.write_manifest()
        remaining = 0
        for c in manifest["cells"]:
            remaining += to_run(c["state"], args.retry_failed)
            print(f"{c['state']:<11} {c['id']}")
        waiting = [k for k, v in manifest["choices"].items() if all(x is None for x in v.values())]
        print(f"{len(manifest['cells'])} cells listed, {remaining} to run; the later seeds of {len(waiting)} "
              f"dataset/method pair(s) are listed once their first-seed candidates have finished")
        for line in cost_lines(runner, datasets, args.retry_failed, args.jobs or 1):
            print(line)
        if invalid:
            log.error("%d cell(s) have an invalid configuration (listed above as `invalid`); fix the grid file",
                      len(invalid))
            return 2
        return 0
    runner.write_manifest()
    previous = {sig: signal.signal(sig, lambda signum, _frame: runner.stop(signum))
                for sig in (signal.SIGINT, signal.SIGTERM)}
    if hasattr(signal, "SIGUSR1"):  # POSIX: `kill -USR1 PID` lets the running cells finish, starts no new one
        previous[signal.SIGUSR1] = signal.signal(signal.SIGUSR1, lambda signum, _frame: runner.drain(signum))
    try:
        runner.run_all(datasets)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    manifest = runner.write_manifest()
    failed = [c for c in manifest["cells"] if c["state"] == "failed"]
    log.info("grid %s: %d cells, %d finished, %d failed; manifest %s", runner.grid.name, len(manifest["cells"]),
             sum(c["state"] == "finished" for c in manifest["cells"]), len(failed), runner.out / "grid.json")
    for c in failed:
        log.warning("failed: %s: %s", c["id"], c["error"])
    if runner.stopping:
        interrupted = sum(c["state"] == "interrupted" for c in manifest["cells"])
        log.error("grid stopped by %s: %d cell(s) interrupted with their checkpoints; continue with: %s",
                  signal.Signals(runner.stopping).name, interrupted, command)
        return 128 + runner.stopping
    if runner.draining:
        left = sum(to_run(c["state"], args.retry_failed) for c in manifest["cells"])
        log.warning("grid drained by %s: its running cells finished, %d cell(s) not started; continue with: %s",
                    signal.Signals(runner.draining).name, left, command)
        return 128 + runner.draining
    for cell_id, why in runner.not_run.items():
        log.warning("not run: %s: %s", cell_id, why)
    return 1 if failed or runner.not_run else 0


if __name__ == "__main__":
    sys.exit(main())
