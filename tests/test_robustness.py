"""Relative loss terms, the momentum encoder of the bank and label-free restarts (n_init)."""

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from skdsc._base import choose_member
from skdsc.nn import MemoryBank, MomentumEncoder

from conftest import SMALL_FACTORIES, small_estimator
from test_checkpoint import (  # noqa: F401  (fixtures)
    assert_same_model, contrastive_images_shape, images_or_rows, interrupt_at_step,
)


# -- normalize_losses -------------------------------------------------------------------

def test_bank_mean_square_norm():
    codes = torch.tensor([[3.0, 4.0], [0.0, 1.0]])
    assert MemoryBank(codes).mean_square_norm().item() == pytest.approx((25 + 1) / 2)


@pytest.mark.parametrize("scale", [1.0, 100.0])
def test_normalized_self_expression_term_is_relative(subspace_data, scale):
    """From DSC-Net's constant start (C near zero) the first epoch's relative residual is close to 1.

    Without normalisation the same term is the codes' squared norm, which
    follows the scale of the network's weights.
    """
    X, _ = subspace_data
    normalized = small_estimator(n_epochs=1, normalize_losses=True,
                                 coef_init="constant").fit(X * scale)
    absolute = small_estimator(n_epochs=1, normalize_losses=False,
                               coef_init="constant").fit(X * scale)
    first = [h for h in normalized.history_ if h["phase"] == "self-expression"][0]
    assert first["self_expression"] == pytest.approx(1.0, abs=0.05)
    energy = np.mean(np.sum(absolute.embedding_ ** 2, axis=1))
    first_absolute = [h for h in absolute.history_ if h["phase"] == "self-expression"][0]
    assert first_absolute["self_expression"] == pytest.approx(energy, rel=0.5)
    assert first_absolute["self_expression"] != pytest.approx(1.0, abs=0.05)


def test_ridge_penalty_follows_code_energy():
    model = small_estimator(lambda_coef=0.5, lambda_self=5.0, normalize_losses=True)
    codes = torch.ones(4, 3) * 2.0  # mean squared norm 12
    assert model._ridge_penalty(codes) == pytest.approx(0.1 * 12)
    model.set_params(normalize_losses=False)
    assert model._ridge_penalty(codes) == pytest.approx(0.1)


def test_normalize_losses_changes_training(subspace_data):
    X, _ = subspace_data
    a = small_estimator(normalize_losses=True).fit(X)
    b = small_estimator(normalize_losses=False).fit(X)
    assert not np.allclose(a.coef_, b.coef_)


# -- bank_momentum ----------------------------------------------------------------------

class _Linear(nn.Module):
    def __init__(self):
        super().__init__()
        self.layer = nn.Linear(2, 2)
        self.register_buffer("count", torch.zeros(()))

    def encode(self, x):
        return self.layer(x)


def test_momentum_encoder_moves_a_fraction_of_the_gap():
    online = _Linear()
    momentum = MomentumEncoder(online, 0.75)
    start = momentum.average.layer.weight.clone()
    with torch.no_grad():
        online.layer.weight.add_(4.0)
        online.count.fill_(3.0)
    momentum.update(online)
    np.testing.assert_allclose(momentum.average.layer.weight, start + 1.0, rtol=1e-6)
    assert momentum.average.count.item() == 3.0
    assert not any(p.requires_grad for p in momentum.average.parameters())
    x = torch.randn(5, 2)
    np.testing.assert_allclose(momentum.encode(x, online), momentum.average.encode(x).detach())


def test_momentum_encoder_rejects_bad_momentum():
    with pytest.raises(ValueError, match=r"momentum must be in \[0, 1\)"):
        MomentumEncoder(_Linear(), 1.0)


@pytest.mark.parametrize("name", ["bdsc", "contrastive"])
def test_bank_written_by_momentum_encoder(monkeypatch, subspace_data, images_or_rows, name):
    """With bank_momentum the bank holds the average's codes, not the online ones."""
    X = images_or_rows[name]
    written = []
    original_write = MemoryBank.write

    def spy(self, indices, codes):
        written.append(codes.detach().clone())
        return original_write(self, indices, codes)

    monkeypatch.setattr(MemoryBank, "write", spy)
    encoded = []
    original = MomentumEncoder.encode

    def spy_encode(self, x, like=None):
        codes = original(self, x, like)
        encoded.append(codes)
        return codes

    monkeypatch.setattr(MomentumEncoder, "encode", spy_encode)
    model = SMALL_FACTORIES[name](bank_momentum=0.9, scale_encoder_lr=False).fit(X)
    assert len(encoded) == len(written) > 0
    for a, b in zip(encoded, written):
        assert torch.equal(a, b)
    reference = SMALL_FACTORIES[name](bank_momentum=0.0, scale_encoder_lr=False).fit(X)
    assert not np.array_equal(model.embedding_, reference.embedding_)


def test_interrupted_momentum_fit_resumes(monkeypatch, tmp_path, subspace_data):
    X, _ = subspace_data
    params = dict(bank_momentum=0.9, n_epochs=5)
    reference = small_estimator(**params).fit(X)
    model = small_estimator(**params, checkpoint_path=tmp_path / "fit.ckpt",
                            checkpoint_interval=0)
    interrupt_at_step(monkeypatch, "self-expression", at_call=8)
    with pytest.raises(KeyboardInterrupt):
        model.fit(X)
    model.fit(X)
    assert_same_model(model, reference)


# -- n_init -----------------------------------------------------------------------------

def test_choose_member_takes_the_medoid():
    good = np.repeat([0, 1, 2], 10)
    relabelled = np.repeat([2, 0, 1], 10)  # the same partition
    bad = np.tile([0, 1, 2], 10)
    chosen, agreement = choose_member([bad, good, relabelled])
    assert chosen == 1
    assert agreement[1] == pytest.approx(agreement[2])
    assert agreement[0] < agreement[1]
    assert choose_member([good]) == (0, pytest.approx(np.ones(1)))


def test_n_init_keeps_the_agreeing_member(subspace_data):
    X, _ = subspace_data
    single = small_estimator().fit(X)
    model = small_estimator(n_init=3).fit(X)
    assert model.member_agreement_.shape == (3,)
    assert model.best_member_ == int(np.argmax(model.member_agreement_))
    assert not hasattr(single, "member_agreement_")
    # The first member is the single fit (same seed); the kept one is some member.
    if model.best_member_ == 0:
        assert_same_model(model, single)
    again = small_estimator(n_init=3).fit(X)
    assert_same_model(model, again)
    model.set_params(n_init=1).fit(X)
    assert not hasattr(model, "member_agreement_") and not hasattr(model, "best_member_")


def test_n_init_resumes_every_member(monkeypatch, tmp_path, subspace_data):
    """Interrupted in the second member: finished members come back from their files."""
    X, _ = subspace_data
    reference = small_estimator(n_init=2).fit(X)
    path = tmp_path / "fit.ckpt"
    model = small_estimator(n_init=2, checkpoint_path=path, checkpoint_interval=0)
    # 5 epochs of 4 steps per member: step 30 is in the second member.
    calls = interrupt_at_step(monkeypatch, "self-expression", at_call=30)
    with pytest.raises(KeyboardInterrupt):
        model.fit(X)
    assert path.exists() and Path(f"{path}.1").exists()
    before = calls["n"]
    model.fit(X)
    assert calls["n"] - before < 20, "the finished first member is not trained again"
    assert_same_model(model, reference)
    np.testing.assert_array_equal(model.member_agreement_, reference.member_agreement_)
    assert not path.exists() and not Path(f"{path}.1").exists()


# -- coef_init --------------------------------------------------------------------------

def test_constant_start_leaves_coefficients_at_dsc_nets_constant(subspace_data):
    X, _ = subspace_data
    model = small_estimator(n_epochs=0, coef_init="constant").fit(X)
    coef = np.asarray(model.coef_)
    off_diagonal = coef[~np.eye(len(X), dtype=bool)]
    assert np.allclose(off_diagonal, 1e-8)
    ridge = small_estimator(n_epochs=0).fit(X)
    assert np.abs(np.asarray(ridge.coef_)).max() > 1e-3


def test_coef_init_rejects_unknown_starts(subspace_data):
    X, _ = subspace_data
    with pytest.raises(ValueError, match="coef_init"):
        small_estimator(coef_init="zeros").fit(X)
