"""Defaults derived from the data: the step budget and the network that grows with the image."""

import numpy as np
import pytest

from skdsc import MiniBatchDeepSubspaceClustering
from skdsc._bdsc import auto_architecture
from skdsc.nn.autoencoder import ConvAutoencoder
from skdsc.nn.trainer import MAX_AUTO_EPOCHS, MIN_AUTO_EPOCHS, STEP_BUDGET, auto_epochs, batch_plan


@pytest.mark.parametrize("image_size, channels", [
    ((8, 8), (15,)), ((28, 28), (15,)), ((32, 32), (15,)), ((33, 20), (15, 30)),
    ((48, 42), (15, 30)), ((64, 64), (15, 30)), ((128, 96), (15, 30, 60)),
])
def test_auto_architecture_downsamples_to_at_most_16_pixels(image_size, channels):
    hidden_channels, kernel_sizes = auto_architecture(image_size)
    assert hidden_channels == channels
    assert kernel_sizes == (3,) * len(channels)
    network = ConvAutoencoder((1, *image_size), hidden_channels, kernel_sizes)
    assert max(network.latent_shape[1:]) <= 16 or len(channels) == 1


@pytest.mark.parametrize("n_samples, batch_size, expected", [
    (400, 128, MAX_AUTO_EPOCHS),      # 3 batches: the ceiling
    (1440, 128, MAX_AUTO_EPOCHS),     # 12 batches: exactly the budget's 200 epochs
    (7200, 128, 43),
    (70000, 128, MIN_AUTO_EPOCHS),    # 547 batches: the floor
    (500, None, MAX_AUTO_EPOCHS),     # full batch: one step per epoch
])
def test_auto_epochs_is_a_budget_of_steps(n_samples, batch_size, expected):
    assert auto_epochs(n_samples, batch_size) == expected
    _, n_batches = batch_plan(n_samples, batch_size)
    if MIN_AUTO_EPOCHS < expected < MAX_AUTO_EPOCHS:
        assert expected * n_batches >= STEP_BUDGET > (expected - 1) * n_batches


def test_auto_defaults_resolve_in_fit(monkeypatch):
    """n_iter_ and the network follow the data; no parameter is changed by fit."""
    X = np.random.default_rng(0).random((40, 20 * 40)).astype(np.float32)
    model = MiniBatchDeepSubspaceClustering(2, image_shape=(20, 40), batch_size=4,
                                            device="cpu", random_state=0)
    monkeypatch.setattr("skdsc.nn.trainer.STEP_BUDGET", 20)  # keep the test fast
    monkeypatch.setattr("skdsc.nn.trainer.MAX_AUTO_EPOCHS", 3)
    monkeypatch.setattr("skdsc.nn.trainer.MIN_AUTO_EPOCHS", 1)
    model.fit(X)
    assert model.n_iter_ == 2  # 10 batches: 20 steps
    assert model.n_epochs == "auto" and model.hidden_channels == "auto"
    assert [m.out_channels for m in model.network_.encoder] == [15, 30]
    pretrain = [h for h in model.history_ if h["phase"] == "pretrain"]
    assert len(pretrain) == 2
