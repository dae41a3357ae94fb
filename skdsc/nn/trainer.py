"""The mini-batch loop shared by the estimators: batches, progress, history."""

import math
import sys
import time

import torch
from tqdm.auto import tqdm


def batch_plan(n_samples, batch_size):
    """Return ``(batch_size, n_batches)`` of every epoch.

    ``batch_size=None`` (or one of at least ``n_samples``) is one full batch. A
    last batch of fewer than half ``batch_size`` samples is merged into the one
    before it, so no step sees a tiny, noisy batch.
    """
    if batch_size is None or batch_size >= n_samples:
        return n_samples, 1
    n_batches = math.ceil(n_samples / batch_size)
    if n_batches > 1 and n_samples - (n_batches - 1) * batch_size < batch_size // 2:
        n_batches -= 1
    return batch_size, n_batches


# Optimizer steps that a phase with "auto" epochs aims at, and its bounds in
# epochs. 2,400 steps are 200 epochs of COIL-20 in batches of 128, the budget
# the development sets were tuned with; at least 10 epochs let every
# coefficient row (updated once per epoch) move, at most 200 keep small data
# sets from being revisited without end.
STEP_BUDGET = 2400
MIN_AUTO_EPOCHS = 10
MAX_AUTO_EPOCHS = 200


def auto_epochs(n_samples, batch_size):
    """Epochs that give a phase about :data:`STEP_BUDGET` optimizer steps.

    The network learns per step, not per epoch: with a budget in steps, 400
    and 70,000 samples both get enough updates, and large data sets are not
    held to hundreds of long epochs. Bounded to
    ``[MIN_AUTO_EPOCHS, MAX_AUTO_EPOCHS]``.

    Parameters
    ----------
    n_samples : int
    batch_size : int or None
        As for :func:`batch_plan`.

    Returns
    -------
    n_epochs : int
    """
    _, n_batches = batch_plan(n_samples, batch_size)
    return int(min(MAX_AUTO_EPOCHS, max(MIN_AUTO_EPOCHS, math.ceil(STEP_BUDGET / n_batches))))


def shuffled_batches(n_samples, batch_size, generator, device):
    """Index tensors of one epoch: a random permutation cut as :func:`batch_plan` says."""
    batch_size, n_batches = batch_plan(n_samples, batch_size)
    order = torch.randperm(n_samples, generator=generator).to(device)
    bounds = [i * batch_size for i in range(n_batches)] + [n_samples]
    return [order[start:stop] for start, stop in zip(bounds[:-1], bounds[1:])]


def run_epochs(step, n_samples, *, batch_size, n_epochs, generator, device,
               verbose=0, phase="train", divergence_hint="", start_epoch=0, on_epoch_end=None):
    """Run ``n_epochs`` of mini-batch steps and return the per-epoch history.

    Parameters
    ----------
    step : callable
        ``step(indices) -> dict`` performs one optimisation step on the batch
        of sample ``indices`` and returns its loss terms (tensors or floats);
        the key ``"loss"`` is the total that was minimised.
    n_samples : int
        Number of training samples.
    batch_size : int or None
        Samples per step; ``None`` is one full batch per epoch.
    n_epochs : int
        Epoch to stop after; epochs ``start_epoch + 1`` to ``n_epochs`` are run.
    generator : torch.Generator
        CPU generator that draws the batch permutations.
    device : torch.device
        Device the index tensors are sent to.
    verbose : int, default=0
        0 is silent, 1 shows a progress bar, 2 also prints every epoch.
    phase : str, default="train"
        Name shown in progress output and stored in the history.
    divergence_hint : str, default=""
        Advice appended to the error raised when a loss is not finite.
    start_epoch : int, default=0
        Epochs already run, for a phase trained in several calls or resumed.
    on_epoch_end : callable, optional
        ``on_epoch_end(epoch, history)`` after each epoch (``epoch`` counts
        from 1); it may append records of its own to ``history``.

    Returns
    -------
    history : list of dict
        One entry per epoch: ``epoch``, ``phase``, the sample-weighted mean of
        every loss term, and ``seconds``.
    """
    history = []
    started = time.perf_counter()
    bar = tqdm(total=n_epochs, initial=start_epoch, desc=phase, disable=verbose < 1,
               file=sys.stderr, leave=False)
    try:
        for epoch in range(start_epoch, n_epochs):
            start = time.perf_counter()
            totals = {}
            for indices in shuffled_batches(n_samples, batch_size, generator, device):
                terms = step(indices)
                loss = float(terms["loss"])
                if not math.isfinite(loss):
                    raise FloatingPointError(
                        f"The {phase} loss became {loss} at epoch {epoch + 1}. "
                        f"{divergence_hint}".strip()
                    )
                for name, value in terms.items():
                    totals[name] = totals.get(name, 0.0) + float(value) * len(indices)
            record = {"epoch": epoch + 1, "phase": phase}
            record.update({name: value / n_samples for name, value in totals.items()})
            record["seconds"] = time.perf_counter() - start
            history.append(record)
            if on_epoch_end is not None:
                on_epoch_end(epoch + 1, history)
            bar.set_postfix(loss=f"{record['loss']:.4g}")
            bar.update()
            if verbose >= 2:
                terms = ", ".join(f"{k}={v:.4g}" for k, v in record.items()
                                  if k not in ("epoch", "phase", "seconds"))
                per_epoch = (time.perf_counter() - started) / (epoch + 1 - start_epoch)
                left = format_duration(per_epoch * (n_epochs - epoch - 1))
                bar.write(f"[{phase}] epoch {epoch + 1}/{n_epochs}: {terms} "
                          f"({record['seconds']:.2f} s, {left} left)", file=sys.stderr)
    finally:
        bar.close()
    return history


def format_duration(seconds):
    """``seconds`` as ``"1h02m"``, ``"3m05s"`` or ``"4.2s"``."""
    if seconds >= 3600:
        return f"{int(seconds // 3600)}h{int(seconds % 3600 // 60):02d}m"
    if seconds >= 60:
        return f"{int(seconds // 60)}m{int(seconds % 60):02d}s"
    return f"{seconds:.1f}s"
