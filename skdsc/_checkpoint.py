"""Checkpoints that let an interrupted ``fit`` resume where it stopped, and pickles.

A checkpoint is one file written with :func:`torch.save` and read with
``torch.load(weights_only=True)``: it holds tensors, numbers, strings and
containers of them, nothing that unpickling could run. It is written to a
temporary file in the same folder and moved into place with :func:`os.replace`,
so a process killed while saving leaves the previous checkpoint intact.
"""

import copy
import hashlib
import os
import time
import warnings
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch

from .distributed import DataParallelGroup
from .nn.trainer import run_epochs

FORMAT = "skdsc-fit-checkpoint"
VERSION = 1
# Parameters that do not change what a fit computes: a resumed fit may differ
# in them from the interrupted one.
_IGNORED_PARAMS = ("verbose", "checkpoint_path", "checkpoint_interval", "device")


class CheckpointError(ValueError):
    """A checkpoint file that cannot be used to resume this fit."""


def fit_fingerprint(estimator, X):
    """Digest of what determines a fit: estimator class, parameters and data.

    A ``random_state`` that is not an int (None or a RandomState) is left out:
    the resumed fit takes the seed stored in the checkpoint.
    """
    digest = hashlib.sha256()
    digest.update(f"{type(estimator).__module__}.{type(estimator).__qualname__}".encode())
    params = estimator.get_params(deep=False)
    for name in sorted(params):
        if name in _IGNORED_PARAMS:
            continue
        value = params[name]
        if name == "random_state" and not isinstance(value, (int, np.integer)):
            value = "random"
        digest.update(f"{name}={value!r};".encode())
    X = np.ascontiguousarray(X)
    digest.update(f"{X.shape}{X.dtype.str}".encode())
    digest.update(memoryview(X).cast("B"))
    return digest.hexdigest()


class PortablePickleMixin:
    """Pickles of a fitted estimator that load on machines without its device.

    The fitted ``network_`` is pickled with CPU tensors and moved back to
    ``device_`` when loaded, or left on the CPU, with a warning, where that
    device is not available.
    """

    def __getstate__(self):
        # A copy: the default state is the estimator's own __dict__.
        state = dict(super().__getstate__())
        # A search index is rebuilt on demand; faiss indexes do not pickle.
        state.pop("_embedding_index", None)
        network = state.get("network_")
        if network is not None and next(network.parameters()).device.type != "cpu":
            state["network_"] = copy.deepcopy(network).cpu()
        return state

    def __setstate__(self, state):
        super().__setstate__(state)
        device = getattr(self, "device_", None)
        if device is None or not hasattr(self, "network_"):
            return
        if device.type == "cuda" and not torch.cuda.is_available():
            warnings.warn(
                f"This model was fitted on {device} but CUDA is not available; it is "
                "loaded on the CPU.", UserWarning, stacklevel=2,
            )
            self.device_ = torch.device("cpu")
        self.network_.to(self.device_)


def open_checkpoint(estimator, X, member=0):
    """A fit member's :class:`FitCheckpoint`, or None without ``checkpoint_path``.

    The first member writes ``checkpoint_path`` itself; member ``i > 0`` of
    an ``n_init`` fit writes ``checkpoint_path`` with ``.i`` appended.
    """
    if estimator.checkpoint_path is None:
        return None
    path = os.fspath(estimator.checkpoint_path)
    fingerprint = fit_fingerprint(estimator, X)
    if member:
        path, fingerprint = f"{path}.{member}", f"{fingerprint}.{member}"
    return FitCheckpoint(path, fingerprint, estimator.checkpoint_interval)


def _fitted_attributes(estimator):
    """Attributes set by ``fit`` (trailing underscore), by name."""
    return {name: value for name, value in vars(estimator).items()
            if name.endswith("_") and not name.startswith("__")}


@contextmanager
def unchanged_on_failure(estimator):
    """Put back the fitted attributes of ``estimator`` if the block raises.

    Whatever stops it (an error, Ctrl-C), the estimator is left fitted by its
    previous fit, or not fitted, never half-way.
    """
    previous = _fitted_attributes(estimator)
    try:
        yield
    except BaseException:
        for name in _fitted_attributes(estimator):
            delattr(estimator, name)
        vars(estimator).update(previous)
        raise


def state_of(obj):
    """Saveable state of a module, optimiser, memory bank or generator."""
    if isinstance(obj, torch.Generator):
        return obj.get_state()
    return obj.state_dict()


def load_state(obj, state):
    """Put ``state`` (from :func:`state_of`) back into ``obj``."""
    if isinstance(obj, torch.Generator):
        obj.set_state(state)
    else:
        obj.load_state_dict(state)


def global_rng_state(device):
    """States of torch's global generators used by a fit on ``device``."""
    state = {"cpu": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_global_rng_state(state, device):
    torch.set_rng_state(state["cpu"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


class FitCheckpoint:
    """The checkpoint file of one fit.

    Parameters
    ----------
    path : str or os.PathLike
        File to write; its folder must exist.
    fingerprint : str
        :func:`fit_fingerprint` of the fit; a file with another one is refused.
    interval : float
        Least number of seconds between two saves made when they are due.
    """

    def __init__(self, path, fingerprint, interval):
        self.path = Path(path)
        self.fingerprint = fingerprint
        self.interval = interval
        self._last_save = time.monotonic()
        if not self.path.parent.is_dir():
            raise FileNotFoundError(
                f"checkpoint_path={str(path)!r}: the folder {str(self.path.parent)!r} does "
                "not exist."
            )
        if self.path.is_dir():
            raise IsADirectoryError(
                f"checkpoint_path={str(path)!r} is a folder; give the path of a file."
            )

    def load(self):
        """The saved state, or None when there is no checkpoint yet.

        Raises
        ------
        CheckpointError
            The file is corrupt, is not a skdsc checkpoint, or was written by a
            fit with other parameters or data.
        """
        if not self.path.exists():
            return None
        remedy = "Delete it to start the fit afresh, or pass another checkpoint_path."
        try:
            state = torch.load(self.path, map_location="cpu", weights_only=True)
        except Exception as exc:
            # torch's own message is long and suggests weights_only=False,
            # which would run whatever code the file holds: keep it chained.
            raise CheckpointError(
                f"The checkpoint {str(self.path)!r} cannot be read ({type(exc).__name__}); "
                f"it is corrupt or not a skdsc checkpoint. {remedy}"
            ) from exc
        if not isinstance(state, dict) or state.get("format") != FORMAT:
            raise CheckpointError(
                f"{str(self.path)!r} is not a skdsc fit checkpoint. {remedy}"
            )
        if state.get("version") != VERSION:
            raise CheckpointError(
                f"The checkpoint {str(self.path)!r} has format version "
                f"{state.get('version')!r}; this skdsc reads version {VERSION}. {remedy}"
            )
        if state.get("fingerprint") != self.fingerprint:
            raise CheckpointError(
                f"The checkpoint {str(self.path)!r} was written by a fit with other "
                "parameters or other data (or another estimator class); resuming it "
                f"would give a wrong model. {remedy}"
            )
        return state

    def due(self):
        """Whether ``interval`` seconds have passed since the last save."""
        return time.monotonic() - self._last_save >= self.interval

    def save(self, state):
        """Write ``state`` atomically."""
        state = {"format": FORMAT, "version": VERSION, "fingerprint": self.fingerprint,
                 **state}
        temporary = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        try:
            with open(temporary, "wb") as file:
                torch.save(state, file)
                file.flush()
                os.fsync(file.fileno())
            os.replace(temporary, self.path)
        finally:
            if temporary.exists():
                temporary.unlink()
        self._last_save = time.monotonic()

    def remove(self):
        """Delete the file once the fit it belongs to has finished."""
        self.path.unlink(missing_ok=True)


class TrainingSession:
    """Runs the training phases of one fit, saving and restoring checkpoints.

    Without a checkpoint it only runs the epochs and collects the history.
    With one, every phase saves the state of the objects it trains (and the
    random generators) at the end of an epoch when ``interval`` seconds have
    passed and at its last epoch; a fit that finds a saved state skips what
    was done and continues from it, with the same batches and draws as an
    uninterrupted fit.

    Parameters
    ----------
    checkpoint : FitCheckpoint or None
    saved : dict or None
        What ``checkpoint.load()`` returned.
    generator : torch.Generator
        The fit's CPU generator (batch order and other draws).
    device : torch.device
    n_samples : int
    batch_size : int or None
    verbose : int
    meta : dict
        Numbers and strings saved with every checkpoint (seed, mode).
    parallel : DataParallelGroup, optional
        The processes of a data-parallel fit: the first one writes the
        checkpoints, with the random generators of every process.

    Attributes
    ----------
    history : list of dict
        Records of the finished phases (restored ones included).
    attempt : int
        Initialisation attempt that the pretraining phase belongs to.
    """

    def __init__(self, checkpoint, saved, generator, device, n_samples, batch_size, verbose,
                 meta, parallel=None):
        self.parallel = DataParallelGroup() if parallel is None else parallel
        if saved is not None and saved.get("world_size", 1) != self.parallel.world_size:
            raise CheckpointError(
                f"The checkpoint {str(checkpoint.path)!r} was written by a fit over "
                f"{saved.get('world_size', 1)} process(es); resume it with as many, not "
                f"{self.parallel.world_size}, or delete it to start afresh."
            )
        self.checkpoint = checkpoint
        self._saved = saved
        self.generator = generator
        self.device = device
        self.n_samples = n_samples
        self.batch_size = batch_size
        self.verbose = verbose
        self.meta = meta
        self.history = list(saved["history"]) if saved else []
        self.attempt = saved["attempt"] if saved else 1

    @property
    def resumed_stage(self):
        """Stage of the saved state not restored yet (``"pretrain"``,
        ``"self-expression"``), or None."""
        return None if self._saved is None else self._saved["stage"]

    def saved_state(self, name):
        """Saved state of the object ``name`` of the stage being resumed."""
        return self._saved["states"][name]

    def run(self, step, *, stage, n_epochs, objects, divergence_hint="", on_epoch_end=None,
            save_at_start=False):
        """Run (or finish) the phase ``stage`` and add its records to ``history``.

        Parameters
        ----------
        step : callable
            ``step(indices) -> dict``, as for :func:`~skdsc.nn.trainer.run_epochs`.
        stage : str
            Phase name, in the history and in the checkpoint.
        n_epochs : int
        objects : dict
            Name -> module, optimiser, memory bank or generator that the phase
            changes: all of them are saved and restored together.
        divergence_hint, on_epoch_end
            Passed to :func:`~skdsc.nn.trainer.run_epochs`.
        save_at_start : bool, default=False
            Also save before the first epoch (the phase's setup is costly).
        """
        start, earlier = 0, []
        if self._saved is not None and self._saved["stage"] == stage:
            start, earlier = self._restore(objects)
        elif save_at_start and self.checkpoint is not None:
            self._save(stage, 0, objects, [])

        def end_of_epoch(epoch, history):
            if on_epoch_end is not None:
                on_epoch_end(epoch, history)
            if self.checkpoint is None:
                return
            # The first process's clock decides, so that all save together.
            if self.parallel.broadcast_object(epoch == n_epochs or self.checkpoint.due()):
                self._save(stage, epoch, objects, earlier + history)

        history = run_epochs(
            step, self.n_samples, batch_size=self.batch_size, n_epochs=n_epochs,
            start_epoch=start, generator=self.generator, device=self.device,
            verbose=self.verbose, phase=stage, divergence_hint=divergence_hint,
            on_epoch_end=end_of_epoch,
        )
        self.history += earlier + history

    def _save(self, stage, epoch, objects, phase_history):
        states = {name: state_of(obj) for name, obj in objects.items()}
        rng = {"generator": self.generator.get_state(), **global_rng_state(self.device)}
        if self.parallel.active:
            # The processes draw different views of their shares: keep the
            # generators of each.
            own = {"rng": rng, "generators": {name: state for name, state in states.items()
                                              if isinstance(objects[name], torch.Generator)}}
            per_process = self.parallel.gather_object(own)
            if not self.parallel.is_main:
                return
            rng = {"per_process": per_process}
        self.checkpoint.save({
            **self.meta,
            "stage": stage, "attempt": self.attempt, "epoch": epoch,
            "world_size": self.parallel.world_size,
            "history": self.history, "phase_history": phase_history,
            "states": states, "rng": rng,
        })

    def _restore(self, objects):
        saved, self._saved = self._saved, None
        missing = set(objects) ^ set(saved["states"])
        if missing:
            raise CheckpointError(
                f"The checkpoint {str(self.checkpoint.path)!r} does not match this fit "
                f"(states {sorted(missing)} differ). Delete it to start afresh."
            )
        rng, states = saved["rng"], dict(saved["states"])
        if "per_process" in rng:
            own = rng["per_process"][self.parallel.rank]
            rng = own["rng"]
            states.update(own["generators"])
        for name, obj in objects.items():
            load_state(obj, states[name])
        self.generator.set_state(rng["generator"])
        set_global_rng_state(rng, self.device)
        return saved["epoch"], list(saved["phase_history"])
