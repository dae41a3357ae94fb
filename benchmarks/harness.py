"""Running benchmark fits: one fresh process per fit, one JSON line per record.

Every task is a module-level function with its arguments. It runs in a new
(spawned) Python process, so the peak resident memory it reports is its own,
and it returns one record (a dict) or a list of them. The harness adds what
every record carries (suite, commit, threads, quick, time) and appends the
records to a JSON-lines file. A task that raises, is killed (for example by
the kernel when memory runs out) or runs past its time limit gives a record
with an ``error`` field instead, so that one failed fit never stops a suite.
"""

import io
import json
import multiprocessing
import os
import resource
import sys
import time
import traceback
from concurrent.futures import ThreadPoolExecutor
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from protocol import ALL_SETS, DEFAULT_DATA_DIR, _commit  # noqa: E402

RESULTS = HERE / "results"
# Quick runs are smoke runs: their records never land beside the evidence.
QUICK_RESULTS = HERE / "_work"
# Files of the data sets in the data folder; None: bundled with scikit-learn.
SET_FILES = {
    "orl": "ORL_32x32.mat",
    "coil20": "COIL20.mat",
    "coil100": "COIL100_32x32.mat",
    "coil100rgb": "COIL100_32x32_rgb.npz",
    "mnist": "mnist.npz",
    "digits": None,
}
# The set that needs no file: quick runs fall back to it.
FALLBACK_SET = "digits"
# Characters of a failed task's output kept in its record.
LOG_TAIL = 2000


@dataclass
class Task:
    """One fit: ``function(*args)`` in a fresh process.

    ``meta`` holds what is known before the fit (data set, estimator,
    parameters, seed); it heads the record, and is all an error record has.
    """

    function: object
    args: tuple
    meta: dict = field(default_factory=dict)


def available(name, data_dir):
    """Whether the data set ``name`` can be loaded from ``data_dir``."""
    filename = SET_FILES[name]
    return filename is None or (Path(data_dir) / filename).is_file()


def resolve_sets(names, data_dir, quick):
    """The data sets to run: ``names``, with missing ones replaced in quick runs.

    A quick run replaces every set whose file is missing by scikit-learn's
    bundled digits (no download), so that it runs anywhere; a full run
    refuses a missing set.

    Returns
    -------
    sets : list of str
    notes : list of str
        One line per replaced set.
    """
    sets, notes = [], []
    for name in names:
        if name not in ALL_SETS:
            raise ValueError(f"unknown data set {name!r}; known: {sorted(ALL_SETS)}")
        if available(name, data_dir):
            chosen = name
        elif quick:
            chosen = FALLBACK_SET
            notes.append(f"{name}: {Path(data_dir) / SET_FILES[name]} not found, "
                         f"quick run uses {FALLBACK_SET!r} instead")
        else:
            raise FileNotFoundError(f"data set {name!r} needs {Path(data_dir) / SET_FILES[name]}")
        if chosen not in sets:
            sets.append(chosen)
    return sets, notes


def default_out(suite, quick):
    """Records file of a suite: ``results/SUITE.jsonl``, quick runs in ``_work``."""
    if quick:
        return QUICK_RESULTS / f"{suite}_quick.jsonl"
    return RESULTS / f"{suite}.jsonl"


def peak_rss_mb():
    """Peak resident memory of this process so far, in MB (Linux ``ru_maxrss``)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def resident_mb(field_name="VmRSS"):
    """``VmRSS`` (resident now) or ``VmHWM`` (peak since the last reset) in MB."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field_name + ":"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"{field_name} not in /proc/self/status (Linux only).")


def reset_peak_rss():
    """Restart the kernel's peak-RSS count (``VmHWM``) of this process (Linux >= 4.0)."""
    with open("/proc/self/clear_refs", "w") as clear_refs:
        clear_refs.write("5")


def set_process_threads(threads):
    """Environment that every child inherits: ``threads`` per fit, no progress bars.

    Set in the parent before any child starts: BLAS and OpenMP read their
    thread counts when they load.
    """
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[name] = str(threads)
    # protocol.fit_and_score reads its torch threads from here.
    os.environ["BENCH_THREADS"] = str(threads)
    # clustpy draws tqdm bars on every epoch.
    os.environ["TQDM_DISABLE"] = "1"


def _child(connection, function, args, threads):
    """Body of the fresh process: run one task, send back its result or its error."""
    output = io.StringIO()
    try:
        import threadpoolctl
        import torch

        torch.set_num_threads(threads)
        threadpoolctl.threadpool_limits(threads)
        with redirect_stdout(output), redirect_stderr(output):
            result = function(*args)
        connection.send(("ok", result))
    except BaseException as exc:  # the record says why, whatever it was
        log = output.getvalue() + traceback.format_exc()
        connection.send(("error", f"{type(exc).__name__}: {exc}", log[-LOG_TAIL:]))
    finally:
        connection.close()


def run_task(task, threads=1, timeout=None):
    """Run ``task`` in a fresh spawned process and return its records.

    Returns
    -------
    records : list of dict
        The task's records, each starting with ``task.meta``; one record
        with ``error`` (and ``log_tail``) when it failed, was killed or ran
        past ``timeout`` seconds.
    """
    context = multiprocessing.get_context("spawn")
    receiver, sender = context.Pipe(duplex=False)
    process = context.Process(target=_child, args=(sender, task.function, task.args, threads))
    start = time.perf_counter()
    process.start()
    sender.close()
    try:
        if not receiver.poll(timeout):
            process.kill()
            reply = ("error", f"timed out after {timeout:.0f} s", "")
        else:
            reply = receiver.recv()
    except EOFError:
        process.join()
        code = process.exitcode
        reason = " (killed: out of memory?)" if code == -9 else ""
        reply = ("error", f"process ended with exit code {code}{reason}", "")
    finally:
        receiver.close()
        process.join()
    elapsed = time.perf_counter() - start
    if reply[0] == "error":
        return [{**task.meta, "error": reply[1], "log_tail": reply[2],
                 "process_seconds": elapsed}]
    results = reply[1] if isinstance(reply[1], list) else [reply[1]]
    return [{**task.meta, **result, "process_seconds": elapsed} for result in results]


def run_tasks(tasks, out, *, workers=1, threads=1, timeout=None, extra=None, echo=True):
    """Run tasks, ``workers`` at a time, and append their records to ``out``.

    Records are written in the order of ``tasks`` as they complete, each with
    ``extra`` and the common fields added.

    Returns
    -------
    records : list of dict
    """
    set_process_threads(threads)
    common = {"commit": _commit(), "threads": threads, **(extra or {})}
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    written = []
    with ThreadPoolExecutor(workers) as pool, out.open("a") as sink:
        futures = [pool.submit(run_task, task, threads, timeout) for task in tasks]
        for future in futures:
            for record in future.result():
                record = {**record, **common, "finished": time.strftime("%Y-%m-%d %H:%M:%S")}
                sink.write(json.dumps(record) + "\n")
                sink.flush()
                written.append(record)
                if echo:
                    print(summary_line(record), flush=True)
    return written


def summary_line(record):
    """One line of progress for a record."""
    head = " ".join(str(part) for part in (
        record.get("dataset", ""), f"n={record.get('n_samples', '')}",
        record.get("study", ""), record.get("peer") or record.get("estimator", ""),
        record.get("mode", ""),
        record.get("variant", ""), f"seed={record.get('seed', '')}") if part != "")
    if "error" in record:
        return f"{head}: FAILED: {record['error']}"
    if "acc" not in record:
        return f"{head}: " + ", ".join(f"{k}={v}" for k, v in record.items()
                                       if isinstance(v, (int, float)) and k != "seed")
    seconds = record.get("fit_seconds", record.get("seconds", float("nan")))
    return (f"{head}: ACC {record['acc']:.3f} NMI {record['nmi']:.3f} fit {seconds:.1f} s "
            f"peak RSS {record.get('peak_rss_mb', float('nan')):.0f} MB")


def read_records(*paths, include_quick=False, include_errors=False):
    """Records of JSON-lines files (missing files are skipped), in file order."""
    records = []
    for path in paths:
        path = Path(path)
        if not path.is_file():
            continue
        for line in path.read_text().splitlines():
            if not line.strip():
                continue
            record = json.loads(line)
            if record.get("quick") and not include_quick:
                continue
            if "error" in record and not include_errors:
                continue
            records.append(record)
    return records


__all__ = ["DEFAULT_DATA_DIR", "Task", "available", "default_out", "peak_rss_mb",
           "read_records", "resolve_sets", "run_task", "run_tasks"]
