"""A slowly moving copy of a network that writes the memory bank."""

import copy

import torch
from torch import nn


class MomentumEncoder(nn.Module):
    """Exponential moving average (EMA) of a network, used to fill the bank.

    The memory bank of the mini-batch method holds codes written at different
    steps of an epoch, by encoders that differ more the faster the encoder
    moves. Jiang et al. keep them consistent by slowing the encoder itself
    (learning rate divided by the number of batches per epoch). A momentum
    encoder, as in MoCo, is the other answer: the online encoder learns at the
    full rate, and the bank is written by its moving average, whose weights
    change by a fraction ``1 - momentum`` of the gap per step.

    Parameters
    ----------
    network : torch.nn.Module
        The online network; it must have an ``encode`` method. Copied.
    momentum : float in [0, 1)
        Weight of the old average in each update.
    """

    def __init__(self, network, momentum):
        super().__init__()
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"momentum must be in [0, 1), got {momentum!r}.")
        self.average = copy.deepcopy(network).requires_grad_(False)
        self.momentum = float(momentum)

    @torch.no_grad()
    def encode(self, x, like=None):
        """Codes of ``x`` from the averaged network.

        ``like`` is the online network: the average runs in its train or eval
        mode, so that both encode alike.
        """
        if like is not None:
            self.average.train(like.training)
        return self.average.encode(x)

    @torch.no_grad()
    def update(self, network):
        """Move the average towards ``network``'s weights; copy its buffers."""
        for average, online in zip(self.average.parameters(), network.parameters()):
            average.lerp_(online.detach(), 1.0 - self.momentum)
        # Buffers (batch-norm statistics) are estimates, not learned: take the
        # online network's.
        for average, online in zip(self.average.buffers(), network.buffers()):
            average.copy_(online)
