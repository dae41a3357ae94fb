"""Memory estimates that choose between dense and sparse self-expression."""

import os
from contextlib import contextmanager

import torch

SELF_EXPRESSION_MODES = ("auto", "dense", "sparse")
# Largest training set for which "auto" picks the dense mode (the paper's
# method, exact): beyond it a dense epoch costs O(n^2) time as well as memory.
AUTO_DENSE_MAX_SAMPLES = 10_000
# Share of the available memory that "auto" lets the dense mode plan to use.
AUTO_DENSE_MEMORY_SHARE = 0.5
# Bytes per coefficient pair of the dense mode, by stage: while training the
# float32 matrix, its two Adam moments and a final copy; in post-processing
# float64 working copies (thresholding, symmetrisation, eigenvectors,
# affinity and the Laplacian of spectral clustering) on the host. Checked
# against the scaling suite of benchmarks/run.py: a dense fit of 10,000 MNIST digits added
# 3,765 MB of peak RSS (about 34 bytes per pair beyond the fixed costs).
_DENSE_TRAINING_BYTES_PER_PAIR = 16
_DENSE_POSTPROCESSING_BYTES_PER_PAIR = 40
# Bytes per candidate of the sparse mode while training: int64 index, float32
# value, gradient and two Adam moments.
_SPARSE_TRAINING_BYTES_PER_CANDIDATE = 24


def dense_memory_estimate(n_samples, device):
    """Bytes the dense mode needs beyond the network and the data.

    Parameters
    ----------
    n_samples : int
    device : torch.device
        Training device.

    Returns
    -------
    estimate : dict
        ``{"device": bytes on the training device, "host": bytes in main
        memory}``; on the CPU both stages use main memory, one after the other.
    """
    pairs = n_samples ** 2
    training = _DENSE_TRAINING_BYTES_PER_PAIR * pairs
    postprocessing = _DENSE_POSTPROCESSING_BYTES_PER_PAIR * pairs
    if device.type == "cpu":
        return {"device": 0, "host": max(training, postprocessing)}
    return {"device": training, "host": postprocessing}


def available_memory(device):
    """Free memory in bytes as ``{"device": ..., "host": ...}``; None where unknown.

    The host figure is Linux's ``MemAvailable`` (memory usable without
    swapping), falling back to free physical pages elsewhere.
    """
    device_free = None
    if device.type == "cuda":
        device_free = torch.cuda.mem_get_info(device)[0]
    return {"device": device_free, "host": _host_available()}


def _host_available():
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return None


def _fits(needed, free, share=1.0):
    return free is None or needed <= share * free


def resolve_self_expression(mode, n_samples, device, *, available=None):
    """The self-expression mode to train with: ``"dense"`` or ``"sparse"``.

    ``"auto"`` picks the dense mode when ``n_samples`` is at most
    ``AUTO_DENSE_MAX_SAMPLES`` and the dense estimate fits in half of the free
    memory (device and host), and the sparse mode otherwise. A requested dense
    mode that cannot fit raises before any training.

    Parameters
    ----------
    mode : {"auto", "dense", "sparse"}
    n_samples : int
    device : torch.device
    available : dict, optional
        Free memory as returned by :func:`available_memory` (measured when None).

    Returns
    -------
    mode : {"dense", "sparse"}

    Raises
    ------
    MemoryError
        ``mode="dense"`` and the estimate exceeds the free memory.
    """
    if mode == "sparse":
        return mode
    needed = dense_memory_estimate(n_samples, device)
    free = available_memory(device) if available is None else available
    if mode == "auto":
        fits = all(_fits(needed[where], free[where], AUTO_DENSE_MEMORY_SHARE)
                   for where in ("device", "host"))
        return "dense" if n_samples <= AUTO_DENSE_MAX_SAMPLES and fits else "sparse"
    for where in ("device", "host"):
        if not _fits(needed[where], free[where]):
            place = device if where == "device" else "main memory"
            raise MemoryError(
                f"self_expression='dense' needs about {_gib(needed[where])} of {place} for "
                f"n_samples={n_samples} (an n x n coefficient matrix, its optimiser state "
                f"and post-processing copies), but only {_gib(free[where])} is free. Use "
                "self_expression='sparse' (memory grows as n_samples * n_nonzero) or "
                "fewer samples."
            )
    return mode


def _gib(n_bytes):
    if n_bytes < 2 ** 30:
        return f"{n_bytes / 2 ** 20:.1f} MiB"
    return f"{n_bytes / 2 ** 30:.1f} GiB"


def self_expression_memory_estimate(n_samples, mode, n_nonzero):
    """Bytes of the coefficients and their optimiser state while training.

    Parameters
    ----------
    n_samples : int
    mode : {"dense", "sparse"}
    n_nonzero : int
        Candidates per sample of the sparse mode.

    Returns
    -------
    n_bytes : int
    """
    if mode == "dense":
        return _DENSE_TRAINING_BYTES_PER_PAIR * n_samples ** 2
    return _SPARSE_TRAINING_BYTES_PER_CANDIDATE * n_samples * min(n_nonzero, n_samples - 1)


def _is_out_of_memory(exc):
    # torch.OutOfMemoryError (CUDA) is a RuntimeError; the CPU allocator
    # raises a plain RuntimeError.
    return isinstance(exc, torch.OutOfMemoryError) or "can't allocate memory" in str(exc)


@contextmanager
def explained_out_of_memory(estimator, n_samples, mode, device):
    """Turn an out-of-memory error of training into one that says what to change.

    The :class:`MemoryError` raised names the device, the estimated memory of
    the self-expression state and the parameters that reduce memory, and
    chains the original error.
    """
    try:
        yield
    except RuntimeError as exc:
        if not _is_out_of_memory(exc):
            raise
        needed = self_expression_memory_estimate(n_samples, mode, estimator.n_nonzero)
        remedies = [f"a smaller batch_size (now {estimator.batch_size}; activations grow "
                    "with it)"]
        if mode == "dense":
            remedies.append("self_expression='sparse' (memory grows as n_samples * "
                            f"n_nonzero instead of n_samples**2; n_nonzero is now "
                            f"{estimator.n_nonzero})")
        else:
            remedies.append(f"a smaller n_nonzero (now {estimator.n_nonzero})")
        remedies += estimator._memory_remedies()
        if device.type == "cuda":
            remedies.append("device='cpu' (main memory is usually larger)")
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise MemoryError(
            f"{type(estimator).__name__} ran out of memory on {device} during fit "
            f"({first_line}). With n_samples={n_samples} and self_expression={mode!r} the "
            f"coefficients and their optimiser state alone need about {_gib(needed)}, "
            "besides the network, its activations and the memory bank. To use less "
            f"memory, try {'; '.join(remedies)}."
        ) from exc
