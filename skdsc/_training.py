"""The training phases of a fit, with the network, bank, layer and data passed in.

A fit runs, in order:

1. :func:`pretrain`: the network alone, on the estimator's pretraining loss
   (reconstruction for the autoencoder, two-view InfoNCE for the contrastive
   encoder);
2. :func:`train_self_expression`: the network and the self-expressive layer
   together, mini-batch by mini-batch against the memory bank, on the
   estimator's data loss plus the two self-expression terms.

An estimator supplies only what is its own, as an :class:`Objective`: its
loss and the network's parameter groups. Epochs, batches, checkpoints and
divergence checks are the :class:`~skdsc._checkpoint.TrainingSession`'s.
"""

import time
import warnings
from typing import Callable, NamedTuple

import torch
from sklearn.exceptions import ConvergenceWarning
from torch.utils.flop_counter import FlopCounterMode

from .distributed import DataParallelGroup
from .nn.losses import coefficient_loss, self_expression_loss
from .nn.memory_bank import MemoryBank
from .nn.trainer import batch_plan

# Rows encoded at once outside training (prediction, bank refresh).
INFERENCE_CHUNK = 1024
# Initialisations tried when pretraining leaves codes that cannot be clustered.
MAX_INITIALISATIONS = 3
# A network's own work (a pretraining step, the encoding of all the rows) is
# split across the processes only when the forward pass of a batch costs at
# least this many FLOPs. Below it, summing the gradients of a split step
# (about a millisecond over gloo) or gathering the codes (seconds for 20,000
# MNIST codes, against 0.1 s to compute them) costs more than the work it
# saves, and every process does all of it: the single process's arithmetic.
MIN_SPLIT_FLOPS = 1e8


class Objective(NamedTuple):
    """What an estimator trains in a phase.

    Attributes
    ----------
    name : str
        Name of the data term in the history (``"reconstruction"``,
        ``"contrastive"``).
    loss : callable
        Pretraining: ``loss(x)`` of a batch of inputs. Self-expression:
        ``loss(x, codes, expressed, indices)``, the data term of a batch given
        its live codes and their self-expression.
    parameter_groups : list of dict
        Adam parameter groups of the network (with their own ``"lr"`` where it
        differs from the phase's learning rate).
    generators : dict
        Random generators the loss draws from, by name (saved in checkpoints).
    divergence_hint : str
        Advice given when the loss is not finite.
    cheap_network : bool, default=False
        The network costs little next to the dense rows, each of which
        multiplies the whole bank, and draws nothing. In a data-parallel
        self-expressive step of the dense mode every process then encodes the
        whole batch itself instead of gathering the other shares' codes, which
        saves two collectives a step (the gather and its backward). In the
        sparse mode a row touches only ``n_nonzero`` codes, the network is
        most of a step, and the codes are gathered. With an ``exact`` process
        group, in either mode, every process runs the whole step and only the
        rows of the layer's products with the codes are shared out (see
        :func:`~skdsc.distributed.init_process_group`).
    """

    name: str
    loss: Callable
    parameter_groups: list
    generators: dict
    divergence_hint: str
    cheap_network: bool = False


@torch.no_grad()
def encode_all(network, inputs, parallel=None):
    """Latent codes of ``inputs`` in eval mode, chunk by chunk.

    With an active :class:`~skdsc.distributed.DataParallelGroup` each process
    encodes its share of the rows and every process gets all the codes (see
    :func:`network_parallel` for when that pays).
    """
    if parallel is not None and parallel.active:
        share, _ = parallel.share(torch.arange(len(inputs), device=inputs.device))
        return parallel.gather_rows(encode_all(network, inputs[share]), len(inputs))
    was_training = network.training
    network.eval()
    chunks = inputs.split(INFERENCE_CHUNK)
    first = network.encode(chunks[0])
    # Filled in place: concatenating a list would hold the codes twice.
    codes = first.new_empty((len(inputs), *first.shape[1:]))
    codes[:len(first)] = first
    start = len(first)
    for chunk in chunks[1:]:
        codes[start:start + len(chunk)] = network.encode(chunk)
        start += len(chunk)
    network.train(was_training)
    return codes


def _parameters(optimizer):
    return [p for group in optimizer.param_groups for p in group["params"]]


def _backward(loss, share, indices, parallel):
    """Backpropagate a share's loss so that the processes' gradients sum to the batch's.

    Every loss term is a mean over the samples it sees: weighted by the
    share's part of the batch, the sum over the processes is the batch mean.
    """
    if parallel.active:
        loss = loss * (len(share) / len(indices))
    loss.backward()


def _share_terms(terms, share, indices, parallel):
    """Detached loss terms, weighted by the share's part of the batch."""
    terms = {name: value.detach() for name, value in terms.items()}
    if not parallel.active:
        return terms
    return {name: value * (len(share) / len(indices)) for name, value in terms.items()}


def batch_forward_flops(network, inputs, batch_size):
    """FLOPs of ``network``'s forward pass on one batch of ``inputs``.

    Counted on one sample in eval mode (so that nothing is drawn or updated)
    and scaled to the batch; the count is of the arithmetic, not a timing, so
    every process and every run comes to the same number.
    """
    was_training = network.training
    network.eval()
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            network(inputs[:1])
    finally:
        network.train(was_training)
    return counter.get_total_flops() * batch_plan(len(inputs), batch_size)[0]


def network_parallel(parallel, network, inputs, batch_size):
    """The group that ``network``'s own work (pretraining, encoding) is split over.

    ``parallel`` itself, or a single-process group when every process should
    run the network over all the rows: for an ``exact`` group, and for a
    network whose forward pass over a batch costs less than
    :data:`MIN_SPLIT_FLOPS`, whose gradients or codes would take longer to
    send than to compute.
    """
    if parallel.active and (parallel.exact or batch_forward_flops(
            network, inputs, batch_size) < MIN_SPLIT_FLOPS):
        return DataParallelGroup()
    return parallel


def pretrain(session, network, inputs, objective, *, learning_rate, n_epochs):
    """Train ``network`` on ``objective.loss(x)`` with Adam for ``n_epochs`` epochs.

    In a data-parallel fit each process takes its share of every batch and the
    gradients are summed, unless the network is so cheap that the sum costs
    more than the split saves (:data:`MIN_SPLIT_FLOPS`) or the group is
    ``exact``: then every process runs the whole step, exactly as a single
    process would.
    """
    optimizer = torch.optim.Adam(objective.parameter_groups, lr=learning_rate)
    parallel = network_parallel(session.parallel, network, inputs, session.batch_size)

    def step(indices):
        parallel.broadcast_buffers_(network)
        share, _ = parallel.share(indices)
        loss = objective.loss(inputs[share])
        optimizer.zero_grad()
        _backward(loss, share, indices, parallel)
        terms = parallel.sum_step(_parameters(optimizer),
                                  _share_terms({"loss": loss}, share, indices, parallel))
        optimizer.step()
        return terms

    session.run(step, stage="pretrain", n_epochs=n_epochs,
                objects={"network": network, "optimizer": optimizer, **objective.generators},
                divergence_hint=objective.divergence_hint)
    # The last step moved each process's batch statistics by its own share.
    session.parallel.broadcast_buffers_(network)


def pretrained_network(session, inputs, *, build, objective, learning_rate, n_epochs, problem,
                       name):
    """Build and pretrain a network, starting afresh if its codes collapse.

    Up to ``MAX_INITIALISATIONS`` networks are tried, each drawn from the
    seeded generators, so the outcome stays reproducible.

    Parameters
    ----------
    session : TrainingSession
    inputs : torch.Tensor
    build : callable
        ``build()`` returns a new network (on the CPU).
    objective : callable
        ``objective(network, generator, device)`` returns the pretraining
        :class:`Objective`.
    learning_rate : float
    n_epochs : int
    problem : callable
        ``problem(network, codes)`` says why the codes cannot be clustered, or
        returns None.
    name : str
        The estimator's name, in messages.

    Returns
    -------
    network : torch.nn.Module
    codes : torch.Tensor of shape (n_samples, n_latent)
        The pretrained network's codes of ``inputs``.
    """
    # A resumed fit goes on with the attempt it was interrupted in.
    for attempt in range(session.attempt, MAX_INITIALISATIONS + 1):
        session.attempt = attempt
        # Every process starts from the first one's weights.
        network = session.parallel.broadcast_module_(build().to(inputs.device))
        pretrain(session, network, inputs, objective(network, session.generator, inputs.device),
                 learning_rate=learning_rate, n_epochs=n_epochs)
        codes = encode_all(network, inputs, network_parallel(session.parallel, network, inputs,
                                                             session.batch_size))
        reason = problem(network, codes)
        if reason is None:
            break
        session.history.append({"phase": "restart", "attempt": attempt, "reason": reason})
        if session.verbose:
            print(f"[{name}] initialisation {attempt}: {reason}; "
                  "starting again from a new initialisation.")
    else:
        warnings.warn(
            f"{name}: after {MAX_INITIALISATIONS} initialisations {reason}, so the "
            "clusters are not meaningful. Use a wider network (hidden_channels / "
            "hidden_units), a lower learning_rate or another random_state.",
            ConvergenceWarning, stacklevel=5,
        )
    return network, codes


def started_self_expression(codes, mode, *, bank_update, coef_init, penalty, parallel):
    """The memory bank of ``codes`` and a new self-expressive layer over it.

    With ``coef_init="ridge"`` every row starts at its exact ridge minimiser
    for ``codes`` (weight ``penalty``); with ``"constant"`` at DSC-Net's small
    constant.
    """
    bank = MemoryBank(codes, update=bank_update)
    layer = mode.layer(bank, parallel)
    if coef_init == "ridge":
        # Every row is visited once per epoch, and large data sets get few
        # epochs: start each at its exact minimiser for the pretrained codes
        # rather than DSC-Net's small constant.
        layer.ridge_start(bank.codes, penalty, parallel)
    # The same start in every process, whatever their arithmetic.
    return bank, parallel.broadcast_module_(layer)


def restored_self_expression(session, mode, *, bank_update):
    """Bank and layer shaped as in the session's checkpoint; the phase loads their values."""
    bank = MemoryBank(session.saved_state("bank")["codes"].to(session.device),
                      update=bank_update)
    return bank, mode.restored_layer(session.saved_state("self_expression"), bank)


def train_self_expression(session, network, layer, bank, inputs, objective, *, mode,
                          learning_rate, lambda_coef, lambda_self, normalize_losses,
                          momentum_encoder, n_epochs, refresh_epochs):
    """Train the network and the self-expressive layer together.

    Each step encodes a batch ``B``, writes its codes into the bank (the
    momentum encoder's, when there is one), self-expresses them as
    ``C[B, :] @ bank`` and minimises

        data + lambda_coef * ||C[B, :]||^2 + lambda_self * ||Z_B - C[B, :] Z||^2

    with the self-expression term divided by the bank's mean squared code norm
    when ``normalize_losses`` (a residual relative to the codes' energy).
    The coefficients learn with sparse Adam at ``learning_rate``; the network
    with Adam on ``objective.parameter_groups``. Every ``refresh_epochs``
    epochs, in a mode that refreshes (sparse), the candidates move to the
    nearest codes in the bank, so that they follow the encoder.

    Parameters
    ----------
    session : TrainingSession
    network : torch.nn.Module
        Has ``encode(x)``.
    layer : DenseSelfExpression or SparseSelfExpression
    bank : MemoryBank
    inputs : torch.Tensor
        All training inputs, in the network's input shape.
    objective : Objective
        The data term and the network's parameter groups.
    mode : DenseMode or SparseMode
    learning_rate, lambda_coef, lambda_self : float
    normalize_losses : bool
    momentum_encoder : MomentumEncoder or None
        Writes the bank instead of the online encoder.
    n_epochs, refresh_epochs : int
    """
    coef_optimizer = torch.optim.SparseAdam(layer.parameters(), lr=learning_rate)
    optimizer = torch.optim.Adam(objective.parameter_groups, lr=learning_rate)
    parallel = step_parallel = session.parallel
    split = {}
    if parallel.active and parallel.exact and objective.cheap_network:
        # Every process runs the whole step, a single process's, and the layer
        # shares out the rows of its products with the codes.
        split, step_parallel = {"parallel": parallel}, DataParallelGroup()
    encode_whole_batch = (step_parallel.active and objective.cheap_network
                          and mode.name == "dense")

    def step(indices):
        step_parallel.broadcast_buffers_(network)
        share, start = step_parallel.share(indices)
        x = inputs[share]
        # The share is expressed against the live codes of the whole batch, so
        # that its gradient reaches the codes of the other shares too.
        if encode_whole_batch:
            live = network.encode(inputs[indices])
            codes = live[start:start + len(share)]
        else:
            codes = network.encode(x)
            live = step_parallel.gather_rows_with_grad(codes, len(indices))
        if momentum_encoder is None:
            written = live.detach()
        elif encode_whole_batch:
            written = momentum_encoder.encode(inputs[indices], network)
        else:
            written = step_parallel.gather_rows(momentum_encoder.encode(x, network),
                                                len(indices))
        # Every process writes the whole batch, so the banks stay the same.
        slots = bank.write(indices, written)
        expressed, rows = layer(share, live, bank, slots, live_indices=indices, **split)
        data = objective.loss(x, codes, expressed, share)
        scale = 1.0 / bank.mean_square_norm() if normalize_losses else 1.0
        self_expr = scale * self_expression_loss(codes, expressed)
        coefficient = coefficient_loss(rows)
        loss = data + lambda_coef * coefficient + lambda_self * self_expr
        optimizer.zero_grad()
        coef_optimizer.zero_grad()
        _backward(loss, share, indices, step_parallel)
        terms = step_parallel.sum_step(
            _parameters(optimizer),
            _share_terms({"loss": loss, objective.name: data, "self_expression": self_expr,
                          "coefficient": coefficient}, share, indices, step_parallel),
            batch=(layer.weight, indices, share, start))
        optimizer.step()
        coef_optimizer.step()
        if momentum_encoder is not None:
            momentum_encoder.update(network)
        return terms

    refresh = refresh_epochs if mode.refreshes else 0

    def refresh_candidates(epoch, history):
        if not refresh or epoch % refresh or epoch >= n_epochs:
            return
        start = time.perf_counter()
        changed = mode.refresh(layer, bank, coef_optimizer, parallel)
        history.append({"epoch": epoch, "phase": "refresh", "changed": changed,
                        "seconds": time.perf_counter() - start})

    objects = {"network": network, "bank": bank, "self_expression": layer,
               "coef_optimizer": coef_optimizer, "optimizer": optimizer,
               **objective.generators}
    if momentum_encoder is not None:
        objects["momentum_encoder"] = momentum_encoder
    session.run(step, stage="self-expression", n_epochs=n_epochs, objects=objects,
                divergence_hint=objective.divergence_hint, on_epoch_end=refresh_candidates,
                save_at_start=True)
    session.parallel.broadcast_buffers_(network)
