"""Memory bank of latent codes, kept outside the autograd graph."""

import torch

from .self_expression import mean_square_norm

BANK_UPDATES = ("index", "fifo")


class MemoryBank:
    """The latest latent code of every training sample.

    The bank has one slot per training sample. ``owners[j]`` is the sample whose
    code sits in slot ``j``; self-expression coefficients are looked up through
    it, so coefficient columns always refer to samples, never to slots.

    Parameters
    ----------
    codes : torch.Tensor of shape (n_samples, n_features)
        Initial codes (typically one encoding pass over the data). Copied and
        detached.
    update : {"index", "fifo"}, default="index"
        ``"index"`` writes the code of sample ``i`` into slot ``i``. ``"fifo"``
        treats the bank as a queue: each batch overwrites the oldest slots, so a
        sample may be held twice (or not at all) until its next visit.
    """

    def __init__(self, codes, update="index"):
        if update not in BANK_UPDATES:
            raise ValueError(
                f"bank_update must be one of {BANK_UPDATES}, got {update!r}."
            )
        self.codes = codes.detach().clone()
        self.update = update
        n_samples = codes.shape[0]
        self.owners = torch.arange(n_samples, device=codes.device)
        self._head = 0

    @property
    def n_slots(self):
        return self.codes.shape[0]

    def slots_for(self, indices):
        """Slots that the next :meth:`write` of ``indices`` will fill.

        Parameters
        ----------
        indices : torch.Tensor of shape (batch_size,)
            Sample indices of the batch.

        Returns
        -------
        slots : torch.Tensor of shape (batch_size,)
        """
        if self.update == "index":
            return indices
        positions = torch.arange(self._head, self._head + len(indices), device=indices.device)
        return positions % self.n_slots

    @torch.no_grad()
    def mean_square_norm(self):
        """Mean over the slots of the squared code norm, as a 0-d tensor.

        A scale of the codes: loss weights divided by it mean the same for codes
        of any magnitude. A tiny floor keeps it positive for all-zero codes.
        """
        return mean_square_norm(self.codes).clamp_min(1e-12)

    @torch.no_grad()
    def write(self, indices, codes):
        """Store detached ``codes`` of samples ``indices`` and return their slots."""
        slots = self.slots_for(indices)
        self.codes[slots] = codes.detach().to(self.codes.dtype)
        self.owners[slots] = indices
        if self.update == "fifo":
            self._head = (self._head + len(indices)) % self.n_slots
        return slots

    def state_dict(self):
        """Codes, owners and queue position, for a checkpoint."""
        return {"codes": self.codes, "owners": self.owners, "head": self._head}

    @torch.no_grad()
    def load_state_dict(self, state):
        """Restore what :meth:`state_dict` returned (same number of slots and width)."""
        if state["codes"].shape != self.codes.shape:
            raise ValueError(
                f"The saved bank holds codes of shape {tuple(state['codes'].shape)}, this "
                f"bank {tuple(self.codes.shape)}."
            )
        self.codes.copy_(state["codes"])
        self.owners.copy_(state["owners"])
        self._head = int(state["head"])
