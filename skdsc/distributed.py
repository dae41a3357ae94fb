"""Data-parallel fits over several processes with :mod:`torch.distributed`.

Launch the same script in every process with ``torchrun``; each process calls
``fit(X)`` with the same ``X``, and the estimators train data-parallel:

.. code-block:: bash

    torchrun --nproc_per_node=2 fit_script.py                     # one machine
    torchrun --nnodes=2 --node_rank=0 --nproc_per_node=4 \\
        --master_addr=HOST --master_port=29500 fit_script.py      # on each machine

Every global mini-batch is split into one contiguous share per process. Each
process encodes its share and the codes of the whole batch are gathered (a
cheap network encodes the whole batch in every process instead), so every
process writes the same memory bank; the network's gradients are summed over
the processes and the coefficient rows' gradients gathered, so every process
applies the same update. A cheap network's pretraining runs whole in every
process. With ``init_process_group(exact=True)``
:class:`~skdsc.MiniBatchDeepSubspaceClustering` runs the whole step in every
process and shares out only the rows of its products with the codes: the fit
is then the single process's to the last bit. The post-processing runs on the
first process and its result is sent to the others. Every process ends
with the same fitted attributes.

The estimators join the process group that ``torchrun`` describes on their own
(:func:`init_process_group` with its defaults); call it first to choose the
backend or the timeout.
"""

import datetime
import hashlib
import os
from contextlib import contextmanager

import numpy as np
import torch
import torch.distributed as dist

#: Seconds a process waits for the others in one collective operation before
#: it gives up with an error (the default of :func:`init_process_group`).
DEFAULT_TIMEOUT = 600

#: Most gradient values, counted over all the processes, that a step
#: all-gathers and sums in each process; a network with more has its
#: gradients all-reduced. For two processes an all-gather moves as much data
#: as an all-reduce and, over gloo, was mostly the faster; the gathered copies
#: cost ``world_size`` times the gradients' memory, hence the bound (16 MB
#: of float32).
MAX_GATHERED_GRADIENTS = 2 ** 22


# Whether the fits of this process group are to be the single process's to the
# last bit (init_process_group's exact).
_settings = {"exact": False}


def init_process_group(backend="auto", timeout=DEFAULT_TIMEOUT, exact=False):
    """Join the process group described by ``torchrun``'s environment variables.

    Parameters
    ----------
    backend : {"auto", "gloo", "nccl"}, default="auto"
        ``"auto"`` is NCCL when CUDA is available and gloo otherwise.
    timeout : float, default=600
        Seconds a process waits for the others in a collective operation; a
        process that died or hangs makes the others fail after at most this
        long instead of waiting for ever.
    exact : bool, default=False
        Make :class:`~skdsc.MiniBatchDeepSubspaceClustering` (dense and
        sparse modes) fit exactly what one process fits. Pretraining runs
        whole in every process, and so does every self-expressive step,
        except the rows of its products with the codes (the memory bank in
        the dense mode, each row's candidates in the sparse mode), which are
        shared out: no gradient is summed in another order, and the matrix
        products of the CPU's BLAS compute each row on its own. It gathers
        the batch's self-expressed codes every step and repeats the network
        in every process, so it gains less: on a 2-core machine two
        processes took 0.95-0.98 of one process's time on COIL-20 (dense),
        against 0.73-0.76 without it, and 0.72-0.78 on 20,000 MNIST digits
        (sparse), against a median of 0.66 without it
        (``benchmarks/RESULTS.md``).
        ContrastiveDSC, whose steps draw random views, keeps its split steps.

    Returns
    -------
    world_size : int
        Number of processes in the group.
    """
    if backend not in ("auto", "gloo", "nccl"):
        raise ValueError(f"backend must be 'auto', 'gloo' or 'nccl', got {backend!r}.")
    if not isinstance(timeout, (int, float)) or not timeout > 0:
        raise ValueError(f"timeout must be a positive number of seconds, got {timeout!r}.")
    if not isinstance(exact, bool):
        raise ValueError(f"exact must be True or False, got {exact!r}.")
    missing = [name for name in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")
               if name not in os.environ]
    if missing:
        raise RuntimeError(
            f"The environment variables {missing} are not set: start the processes with "
            "torchrun (for example `torchrun --nproc_per_node=2 script.py`)."
        )
    if backend == "auto":
        backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
    dist.init_process_group(backend, timeout=datetime.timedelta(seconds=timeout))
    _settings["exact"] = exact
    return dist.get_world_size()


def _launched_by_torchrun():
    return int(os.environ.get("WORLD_SIZE", "1")) > 1 and "MASTER_ADDR" in os.environ


class _AllGather(torch.autograd.Function):
    """All-gather whose backward sums every process's gradient of each part.

    Forward: ``(world_size, *shape)``, every process's tensor. Backward: each
    process receives the gradient that every process holds for its part (one
    all-to-all, half the traffic of an all-reduce of the whole) and sums them
    in rank order.
    """

    @staticmethod
    def forward(ctx, tensor, rank, world_size):
        ctx.rank = rank
        parts = [torch.empty_like(tensor) for _ in range(world_size)]
        dist.all_gather(parts, tensor.contiguous())
        return torch.stack(parts)

    @staticmethod
    def backward(ctx, grad):
        received = torch.empty_like(grad)
        dist.all_to_all_single(received, grad.contiguous())
        return _sum_in_rank_order(received), None, None


def _sum_in_rank_order(parts):
    """Sum of ``parts[0], parts[1], ...`` in that order, the same in every process."""
    total = parts[0].clone()
    for part in parts[1:]:
        total += part
    return total


class DataParallelGroup:
    """The processes a fit trains over; a single process when there are none.

    All methods are collective: every process of the group must call them in
    the same order. On a single process they do nothing.

    Parameters
    ----------
    rank : int
    world_size : int
    exact : bool, default=False
        As :func:`init_process_group`'s.
    """

    def __init__(self, rank=0, world_size=1, exact=False):
        self.rank = rank
        self.world_size = world_size
        self.exact = exact

    @classmethod
    def current(cls):
        """The initialised process group, joining ``torchrun``'s if needed."""
        if not dist.is_available():
            return cls()
        if not dist.is_initialized() and _launched_by_torchrun():
            init_process_group()
        if not dist.is_initialized():
            return cls()
        return cls(dist.get_rank(), dist.get_world_size(), exact=_settings["exact"])

    @property
    def active(self):
        """Whether more than one process trains."""
        return self.world_size > 1

    @property
    def is_main(self):
        """Whether this is the process that writes checkpoints and post-processes."""
        return self.rank == 0

    def device(self, device):
        """The CUDA device of this process (by ``LOCAL_RANK``) when training on CUDA."""
        if self.active and device.type == "cuda" and device.index is None:
            return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        return device

    @contextmanager
    def _collective(self, what):
        """Turn a failed collective operation into an error that says what happened."""
        try:
            yield
        except RuntimeError as exc:
            raise RuntimeError(
                f"Process {self.rank} of {self.world_size} could not {what} "
                f"({type(exc).__name__}: {str(exc).strip().splitlines()[0]}). This happens "
                "when another process has stopped, failed or not answered within the "
                "process group's timeout; every process must call fit with the same data "
                "and parameters."
            ) from exc

    # -- the batch ------------------------------------------------------------------

    def share(self, indices):
        """This process's contiguous share of a batch: ``(indices, start)``."""
        if not self.active:
            return indices, 0
        sizes = self._share_sizes(len(indices))
        start = sum(sizes[:self.rank])
        return indices[start:start + sizes[self.rank]], start

    def _share_sizes(self, n):
        return [n // self.world_size + (rank < n % self.world_size)
                for rank in range(self.world_size)]

    def gather_rows(self, rows, n_rows):
        """The rows of every process's share, in batch order (no gradient).

        ``rows`` holds this process's share of ``n_rows`` rows (as
        :meth:`share` splits them).
        """
        if not self.active:
            return rows
        sizes = self._share_sizes(n_rows)
        padded = rows.new_zeros((max(sizes), *rows.shape[1:]))
        padded[:len(rows)] = rows
        parts = [torch.empty_like(padded) for _ in range(self.world_size)]
        with self._collective("gather the codes of a batch"):
            dist.all_gather(parts, padded.contiguous())
        return torch.cat([part[:size] for part, size in zip(parts, sizes)])

    def gather_rows_with_grad(self, rows, n_rows):
        """As :meth:`gather_rows`, differentiable: gradients flow back to each share.

        The backward pass sends every process the gradient that all the
        processes' losses have with respect to its rows.
        """
        if not self.active:
            return rows
        sizes = self._share_sizes(n_rows)
        padding = rows.new_zeros((max(sizes) - len(rows), *rows.shape[1:]))
        with self._collective("gather the live codes of a batch"):
            parts = _AllGather.apply(torch.cat([rows, padding]), self.rank, self.world_size)
        return torch.cat([part[:size] for part, size in zip(parts, sizes)])

    def split_rows(self, function, matrix):
        """``function(matrix)`` for a row-wise ``function``, the rows shared out.

        Each process applies ``function`` to its share of the rows (as
        :meth:`share` splits them) and the results are gathered in order. Where
        the kernel computes each row of a product independently of the others
        (a BLAS matrix product on the CPU), the result is the single process's
        to the last bit.
        """
        if not self.active:
            return function(matrix)
        share, _ = self.share(torch.arange(len(matrix), device=matrix.device))
        return self.gather_rows(function(matrix[share]), len(matrix))

    # -- gradients and losses -----------------------------------------------------------

    def sum_step(self, parameters, terms, batch=None):
        """Combine the processes' work on one step.

        After the call every process holds the sum of the processes' dense
        gradients of ``parameters`` and, with ``batch``, the gradient of
        every coefficient row of the batch, so that every process's optimisers
        apply the same update. Each process sends its gradients, its share's
        coefficient rows and its loss terms in one all-gather and sums the
        parts in rank order; a network whose gradients would make that
        buffer large (:data:`MAX_GATHERED_GRADIENTS`) has them all-reduced
        instead.

        Parameters
        ----------
        parameters : list of torch.nn.Parameter
            The network's; their ``.grad`` is summed in place.
        terms : dict of str to 0-d tensor
            This process's share of the loss terms, weighted by its part of
            the batch.
        batch : tuple, optional
            ``(weight, indices, share, start)``: the coefficient parameter,
            whose sparse gradient holds the rows of this process's ``share``
            of the batch ``indices``, ``share`` starting at position ``start``.

        Returns
        -------
        terms : dict of str to 0-d tensor
            The loss terms of the whole batch.
        """
        if not self.active:
            return terms
        # The processes run the same graph, so the same parameters have gradients.
        parameters = [p for p in parameters if p.grad is not None]
        names = list(terms)
        summed = [p.grad.reshape(-1) for p in parameters]
        summed.append(torch.stack([terms[name].detach().float().reshape(()) for name in names]))
        summed = torch.cat(summed)
        n_summed = len(summed)
        if n_summed * self.world_size > MAX_GATHERED_GRADIENTS:
            with self._collective("combine the processes' gradients"):
                dist.all_reduce(summed)
            n_summed = 0
        rows = None
        if batch is not None:
            weight, indices, share, start = batch
            # A coalesced gradient lists the share's rows in increasing order.
            rows = torch.empty((len(share), weight.shape[1]), dtype=summed.dtype,
                               device=summed.device)
            rows[share.argsort()] = weight.grad.coalesce().values()
        parts = self._gather_parts(summed[:n_summed], rows, None if batch is None
                                   else len(indices))
        if n_summed:
            summed = _sum_in_rank_order([part[:n_summed] for part in parts])
        offset = 0
        for p in parameters:
            p.grad.copy_(summed[offset:offset + p.numel()].view_as(p.grad))
            offset += p.numel()
        if batch is not None:
            sizes = self._share_sizes(len(indices))
            values = torch.cat([part[n_summed:].view(-1, weight.shape[1])[:size]
                                for part, size in zip(parts, sizes)])
            weight.grad = torch.sparse_coo_tensor(indices[None], values, weight.shape,
                                                  check_invariants=False)
        return dict(zip(names, summed[offset:].unbind()))

    def _gather_parts(self, summed, rows, n_rows):
        """Every process's ``summed`` followed by its ``rows``, padded to one length."""
        if not len(summed) and rows is None:
            return []
        width = 0 if rows is None else rows.shape[1]
        n_padded = 0 if rows is None else max(self._share_sizes(n_rows))
        flat = summed.new_zeros(len(summed) + n_padded * width)
        flat[:len(summed)] = summed
        if rows is not None:
            flat[len(summed):len(summed) + rows.numel()] = rows.reshape(-1)
        parts = [torch.empty_like(flat) for _ in range(self.world_size)]
        with self._collective("combine the processes' gradients"):
            dist.all_gather(parts, flat)
        return parts

    # -- keeping the processes alike ------------------------------------------------------

    def broadcast_(self, tensor):
        """Overwrite ``tensor`` with the first process's, in place."""
        if self.active:
            with self._collective("receive the first process's tensors"):
                dist.broadcast(tensor, src=0)
        return tensor

    def broadcast_module_(self, module):
        """Give ``module`` the first process's parameters and buffers."""
        self._broadcast_tensors_([*module.parameters(), *module.buffers()])
        return module

    def broadcast_buffers_(self, module):
        """Give ``module`` the first process's buffers (batch-norm statistics), as DDP does."""
        self._broadcast_tensors_(list(module.buffers()))
        return module

    def _broadcast_tensors_(self, tensors):
        """Overwrite ``tensors`` with the first process's: one broadcast per dtype.

        Called every step for the buffers, so a network with many small
        batch-norm buffers costs one collective, not one per buffer.
        """
        if not self.active:
            return
        by_dtype = {}
        for tensor in tensors:
            by_dtype.setdefault(tensor.dtype, []).append(tensor.data)
        for group in by_dtype.values():
            flat = self.broadcast_(torch.cat([tensor.reshape(-1) for tensor in group]))
            offset = 0
            for tensor in group:
                tensor.copy_(flat[offset:offset + tensor.numel()].view_as(tensor))
                offset += tensor.numel()

    def broadcast_object(self, obj):
        """The first process's ``obj`` (any picklable object)."""
        if not self.active:
            return obj
        box = [obj]
        with self._collective("receive the first process's results"):
            dist.broadcast_object_list(box, src=0)
        return box[0]

    def gather_object(self, obj):
        """Every process's ``obj``, by rank."""
        if not self.active:
            return [obj]
        gathered = [None] * self.world_size
        with self._collective("gather the processes' states"):
            dist.all_gather_object(gathered, obj)
        return gathered

    def check_same_data(self, X):
        """Raise unless every process was given the same ``X``."""
        if not self.active:
            return
        array = np.ascontiguousarray(X)
        digest = hashlib.sha256(memoryview(array).cast("B")).hexdigest()
        digests = self.gather_object((array.shape, digest))
        if len(set(digests)) > 1:
            raise ValueError(
                f"Process {self.rank} of {self.world_size}: every process must call fit "
                "with the same X, but the processes hold different data "
                f"(shapes {[shape for shape, _ in digests]})."
            )

    def barrier(self):
        if self.active:
            with self._collective("wait for the other processes"):
                dist.barrier()
