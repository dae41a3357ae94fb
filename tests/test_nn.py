"""The torch building blocks (skdsc.nn): bank, self-expression, autoencoders, trainer."""

import math

import pytest
import torch
from torch.testing import assert_close

from skdsc.nn import ConvAutoencoder, DenseSelfExpression, MLPAutoencoder, MemoryBank
from skdsc.nn.losses import coefficient_loss, reconstruction_loss, self_expression_loss
from skdsc.nn.trainer import batch_plan, run_epochs, shuffled_batches

CPU = torch.device("cpu")


def codes_of(n, d=3, seed=0):
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed))


# -- MemoryBank ---------------------------------------------------------------

def test_bank_copies_and_detaches_initial_codes():
    codes = codes_of(5).requires_grad_()
    bank = MemoryBank(codes)
    assert not bank.codes.requires_grad
    with torch.no_grad():
        codes.add_(1.0)
    assert not torch.equal(bank.codes, codes)  # a copy, not a view
    assert torch.equal(bank.owners, torch.arange(5))


def test_bank_index_update_writes_own_slots():
    initial = codes_of(5)
    bank = MemoryBank(initial, update="index")
    new = codes_of(2, seed=1).requires_grad_()
    slots = bank.write(torch.tensor([3, 1]), new)
    assert torch.equal(slots, torch.tensor([3, 1]))
    assert torch.equal(bank.codes[3], new[0].detach())
    assert torch.equal(bank.codes[1], new[1].detach())
    assert torch.equal(bank.codes[[0, 2, 4]], initial[[0, 2, 4]])
    assert torch.equal(bank.owners, torch.arange(5))
    assert not bank.codes.requires_grad


def test_bank_fifo_update_overwrites_oldest_slots():
    """FIFO: batches fill slots 0, 1, ... in turn, wrapping around; owners track
    which sample each slot holds (a sample may sit in two slots)."""
    initial = codes_of(5)
    bank = MemoryBank(initial, update="fifo")

    first = codes_of(2, seed=1)
    # slots_for only looks ahead: asking twice gives the same slots.
    assert bank.slots_for(torch.tensor([4, 2])).tolist() == [0, 1]
    assert bank.slots_for(torch.tensor([4, 2])).tolist() == [0, 1]
    assert torch.equal(bank.write(torch.tensor([4, 2]), first), torch.tensor([0, 1]))
    assert bank.owners.tolist() == [4, 2, 2, 3, 4]
    assert torch.equal(bank.codes[:2], first)
    assert torch.equal(bank.codes[2:], initial[2:])

    assert bank.write(torch.tensor([0, 1]), codes_of(2, seed=2)).tolist() == [2, 3]
    assert bank.owners.tolist() == [4, 2, 0, 1, 4]

    third = codes_of(3, seed=3)
    # Three rows from head 4 wrap around to slots 4, 0, 1.
    assert bank.write(torch.tensor([1, 3, 0]), third).tolist() == [4, 0, 1]
    assert bank.owners.tolist() == [3, 0, 0, 1, 1]
    assert torch.equal(bank.codes[[4, 0, 1]], third)
    assert bank.slots_for(torch.tensor([2])).tolist() == [2]


def test_bank_rejects_unknown_update():
    with pytest.raises(ValueError, match="bank_update must be one of"):
        MemoryBank(codes_of(3), update="lifo")


# -- DenseSelfExpression ------------------------------------------------------

def _layer(n, seed=0):
    layer = DenseSelfExpression(n)
    with torch.no_grad():
        layer.weight.copy_(torch.randn(n, n, generator=torch.Generator().manual_seed(seed)))
    return layer


def test_rows_have_zero_self_coefficient():
    layer = _layer(6)
    indices = torch.tensor([4, 0, 2])
    rows = layer.rows(indices)
    assert rows.shape == (3, 6)
    for k, i in enumerate(indices.tolist()):
        assert rows[k, i] == 0
        others = [j for j in range(6) if j != i]
        assert torch.equal(rows[k, others], layer.weight[i, others].detach())


def test_coefficients_have_zero_diagonal_and_leave_weights_alone():
    layer = _layer(5)
    weight = layer.weight.detach().clone()
    coef = layer.coefficients()
    assert torch.equal(torch.diagonal(coef), torch.zeros(5))
    off_diagonal = ~torch.eye(5, dtype=torch.bool)
    assert torch.equal(coef[off_diagonal], weight[off_diagonal])
    assert torch.equal(layer.weight.detach(), weight)  # diagonal of the weight untouched


def test_full_batch_forward_is_C_times_Z():
    """With one full batch, the layer is DSC-Net's C @ Z with zero diagonal."""
    n = 6
    layer = _layer(n)
    indices = torch.arange(n)
    live = codes_of(n).requires_grad_()
    bank = MemoryBank(codes_of(n, seed=9))
    slots = bank.write(indices, live)
    expressed, rows = layer(indices, live, bank, slots)
    C = layer.coefficients()
    assert_close(expressed, C @ live.detach())
    assert_close(rows, C)


def test_gradient_reaches_live_codes():
    """The batch's own columns route the gradient into the live codes
    (d sum(C Z) / dZ = C^T 1), while the bank stays detached."""
    n = 6
    layer = _layer(n)
    indices = torch.arange(n)
    live = codes_of(n).requires_grad_()
    bank = MemoryBank(live)
    slots = bank.write(indices, live)
    expressed, _ = layer(indices, live, bank, slots)
    expressed.sum().backward()
    C = layer.coefficients()
    assert_close(live.grad, (C.T @ torch.ones(n, 1)).expand(n, live.shape[1]))
    assert layer.weight.grad.is_sparse


def test_mini_batch_forward_and_gradient():
    """A batch is expressed against the whole bank; only its own codes get gradient."""
    n = 7
    layer = _layer(n)
    bank = MemoryBank(codes_of(n, seed=5))
    indices = torch.tensor([5, 1, 3])
    live = codes_of(3, seed=6).requires_grad_()
    slots = bank.write(indices, live)
    expressed, rows = layer(indices, live, bank, slots)
    C = layer.coefficients()
    assert_close(expressed, C[indices] @ bank.codes)
    assert_close(rows, C[indices])
    expressed.sum().backward()
    # The gradient of live code b is sum_k C[indices[k], indices[b]].
    expected = C[indices][:, indices].sum(0)[:, None].expand_as(live)
    assert_close(live.grad, expected)


def test_forward_follows_bank_owners():
    """With FIFO, coefficients address samples, not slots: slot s weighs C[i, owner(s)]."""
    n = 5
    layer = _layer(n)
    bank = MemoryBank(codes_of(n, seed=1), update="fifo")
    bank.write(torch.tensor([4, 2]), codes_of(2, seed=2))  # owners [4, 2, 2, 3, 4]
    indices = torch.tensor([0, 3])
    live = codes_of(2, seed=3)
    slots = bank.write(indices, live)                      # owners [4, 2, 0, 3, 4]
    expressed, _ = layer(indices, live, bank, slots)
    C = layer.coefficients()
    owners = [4, 2, 0, 3, 4]
    expected = torch.stack([
        sum(C[i, owners[s]] * bank.codes[s] for s in range(n)) for i in indices.tolist()
    ])
    assert_close(expressed, expected)


# -- autoencoders -------------------------------------------------------------

@pytest.mark.parametrize("image_shape", [(1, 28, 28), (3, 17, 9), (2, 1, 5), (1, 4, 4)])
@pytest.mark.parametrize("hidden_channels, kernel_sizes", [
    ((4,), (3,)), ((4, 6), (5, 3)), ((3, 3, 5), (3, 3, 3)), ((4, 2), (4, 2)),
])
def test_conv_autoencoder_keeps_input_shape(image_shape, hidden_channels, kernel_sizes):
    """Odd sizes, even kernels: the decoder returns exactly the input shape, and
    codes are flat of length n_latent."""
    net = ConvAutoencoder(image_shape, hidden_channels, kernel_sizes)
    x = torch.randn(2, *image_shape)
    codes = net.encode(x)
    assert codes.shape == (2, net.n_latent)
    assert net.n_latent == math.prod(net.latent_shape)
    assert net.latent_shape[0] == hidden_channels[-1]
    assert net(x).shape == x.shape
    assert net.decode(codes).shape == x.shape


def test_conv_autoencoder_halves_sizes_with_odd_kernels():
    net = ConvAutoencoder((1, 28, 27), (4, 8, 8), (5, 3, 3))
    assert net.latent_shape == (8, 4, 4)  # 28 -> 14 -> 7 -> 4, 27 -> 14 -> 7 -> 4


def test_conv_autoencoder_rebuilds_negative_values():
    """The last decoder layer is linear, so outputs can be negative."""
    net = ConvAutoencoder((1, 6, 6), (4,), (3,))
    with torch.no_grad():
        out = net(torch.randn(8, 1, 6, 6))
    assert (out < 0).any() and (out > 0).any()


def test_mlp_autoencoder_shapes():
    net = MLPAutoencoder(10, (16, 4))
    x = torch.randn(5, 10)
    assert net.n_latent == 4
    assert net.encode(x).shape == (5, 4)
    assert net(x).shape == (5, 10)
    with torch.no_grad():
        assert (net.encode(torch.randn(50, 10)) < 0).any()  # linear latent layer


# -- losses -------------------------------------------------------------------

def test_losses_are_means_over_samples():
    x = torch.tensor([[1.0, 2.0], [0.0, 0.0]])
    y = torch.tensor([[0.0, 0.0], [0.0, 3.0]])
    assert reconstruction_loss(x, y).item() == pytest.approx((5 + 9) / 2)
    assert self_expression_loss(x, y).item() == pytest.approx((5 + 9) / 2)
    assert coefficient_loss(x).item() == pytest.approx(5 / 2)
    images = torch.ones(2, 1, 2, 2)
    assert reconstruction_loss(images, torch.zeros_like(images)).item() == pytest.approx(4)


# -- trainer ------------------------------------------------------------------

@pytest.mark.parametrize("n, batch_size, expected", [
    (20, None, (20, 1)), (20, 20, (20, 1)), (20, 50, (20, 1)), (20, 8, (8, 3)),
    (21, 10, (10, 2)), (25, 10, (10, 3)),
])
def test_batch_plan(n, batch_size, expected):
    assert batch_plan(n, batch_size) == expected


@pytest.mark.parametrize("n, batch_size, sizes", [
    (20, None, [20]),
    (20, 64, [20]),
    (20, 5, [5, 5, 5, 5]),
    (25, 10, [10, 10, 5]),      # last batch of exactly half a batch is kept
    (21, 10, [10, 11]),         # a last batch of 1 (< half) is merged
    (33, 8, [8, 8, 8, 9]),      # merged into the last full batch only
])
def test_shuffled_batches_cover_every_index_once(n, batch_size, sizes):
    """Every index exactly once per epoch; a last batch under half a batch is merged."""
    batches = shuffled_batches(n, batch_size, torch.Generator().manual_seed(0), CPU)
    assert [len(b) for b in batches] == sizes
    # The learning-rate rule divides by batch_plan's count: it must be the real one.
    assert batch_plan(n, batch_size)[1] == len(batches)
    assert sorted(torch.cat(batches).tolist()) == list(range(n))


def test_shuffled_batches_are_seeded_and_shuffled():
    first = shuffled_batches(30, 7, torch.Generator().manual_seed(1), CPU)
    again = shuffled_batches(30, 7, torch.Generator().manual_seed(1), CPU)
    other = shuffled_batches(30, 7, torch.Generator().manual_seed(2), CPU)
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    assert not torch.equal(torch.cat(first), torch.cat(other))
    assert not torch.equal(torch.cat(first), torch.arange(30))


def test_run_epochs_history_is_sample_weighted():
    """Each epoch logs the sample-weighted mean of every term the step returns."""
    def step(indices):
        size = float(len(indices))
        return {"loss": torch.tensor(size), "other": 2 * size}

    history = run_epochs(step, 21, batch_size=10, n_epochs=3,
                         generator=torch.Generator().manual_seed(0), device=CPU, phase="demo")
    assert [h["epoch"] for h in history] == [1, 2, 3]
    assert all(h["phase"] == "demo" for h in history)
    # Batches of 10 and 11: (10 * 10 + 11 * 11) / 21.
    assert history[0]["loss"] == pytest.approx(221 / 21)
    assert history[0]["other"] == pytest.approx(2 * 221 / 21)
    assert all(h["seconds"] >= 0 for h in history)


@pytest.mark.parametrize("value", [math.nan, math.inf])
def test_run_epochs_stops_on_non_finite_loss(value):
    calls = []

    def step(indices):
        calls.append(len(indices))
        return {"loss": value if len(calls) == 2 else 1.0}

    with pytest.raises(FloatingPointError, match=r"The demo loss became (nan|inf) at epoch 1\. "
                                                 r"Lower the rate"):
        run_epochs(step, 20, batch_size=5, n_epochs=3, generator=torch.Generator(),
                   device=CPU, phase="demo", divergence_hint="Lower the rate.")
    assert len(calls) == 2  # stopped at once


def test_run_epochs_verbose_output(capsys):
    def step(indices):
        return {"loss": 0.5}

    run_epochs(step, 4, batch_size=None, n_epochs=2, generator=torch.Generator(),
               device=CPU, verbose=2, phase="demo")
    err = capsys.readouterr().err
    assert "[demo] epoch 1/2: loss=0.5" in err and "[demo] epoch 2/2" in err
    run_epochs(step, 4, batch_size=None, n_epochs=2, generator=torch.Generator(),
               device=CPU, verbose=0, phase="demo")
    assert capsys.readouterr().err == ""
