"""ContrastiveDSC's ``n_negatives``: a uniform draw of bank slots as the InfoNCE negatives."""

from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.utils._param_validation import InvalidParameterError

import skdsc._contrastive as contrastive_module
from skdsc._checkpoint import TrainingSession
from skdsc._contrastive import _sampled_slots

from conftest import small_contrastive

# 60 samples in batches of 16: 4 steps per epoch (the last batch holds 12).
STEPS_PER_EPOCH = 4


def contrastive(**overrides):
    return small_contrastive(**{"image_shape": (2, 5), "n_pretrain_epochs": 1, "n_epochs": 2,
                                **overrides})


@pytest.fixture
def step_calls(monkeypatch):
    """Every InfoNCE call of the self-expressive steps, and every own-slot mask made."""
    calls = {"info_nce": [], "own_slots": [], "sampled": []}
    original_nce = contrastive_module.info_nce_loss
    original_own = contrastive_module._own_slots
    original_sampled = contrastive_module._sampled_slots

    def nce_spy(anchors, positives, negatives, temperature, exclude=None):
        calls["info_nce"].append(dict(negatives=negatives.detach().clone(),
                                      exclude=None if exclude is None else exclude.clone()))
        return original_nce(anchors, positives, negatives, temperature, exclude=exclude)

    def own_spy(bank, indices, slots=None):
        mask = original_own(bank, indices, slots)
        calls["own_slots"].append(dict(codes=bank.codes.clone(), owners=bank.owners.clone(),
                                       indices=indices.clone(),
                                       slots=None if slots is None else slots.clone()))
        return mask

    def sampled_spy(n_slots, n_draws, generator):
        calls["sampled"].append((n_slots, n_draws))
        return original_sampled(n_slots, n_draws, generator)

    monkeypatch.setattr(contrastive_module, "info_nce_loss", nce_spy)
    monkeypatch.setattr(contrastive_module, "_own_slots", own_spy)
    monkeypatch.setattr(contrastive_module, "_sampled_slots", sampled_spy)
    return calls


def test_each_step_sees_n_negatives_drawn_from_the_bank(step_calls, subspace_data):
    X, _ = subspace_data
    contrastive(n_negatives=20).fit(X)
    nce, own = step_calls["info_nce"], step_calls["own_slots"]
    assert len(nce) == len(own) == 2 * STEPS_PER_EPOCH
    assert step_calls["sampled"] == [(60, 20)] * len(nce)
    draws = []
    for contrast, mask_call in zip(nce, own):
        slots, indices = mask_call["slots"], mask_call["indices"]
        assert contrast["negatives"].shape == (20, 8)
        assert contrast["exclude"].shape == (len(indices), 20)
        # Distinct slots, and the negatives are exactly the codes they hold.
        assert len(torch.unique(slots)) == 20
        torch.testing.assert_close(contrast["negatives"], mask_call["codes"][slots],
                                   rtol=0, atol=0)
        draws.append(set(slots.tolist()))
    # A new draw in every step.
    assert len({frozenset(d) for d in draws}) == len(draws)


def test_own_slot_is_excluded_among_the_drawn_slots(step_calls, subspace_data):
    X, _ = subspace_data
    contrastive(n_negatives=30).fit(X)
    masked_somewhere = 0
    for contrast, mask_call in zip(step_calls["info_nce"], step_calls["own_slots"]):
        slots, indices, owners = mask_call["slots"], mask_call["indices"], mask_call["owners"]
        exclude = contrast["exclude"]
        # Each anchor masks exactly the drawn slots that hold its own sample
        # (one slot per sample with bank_update="index"), and nothing else.
        expected = owners[slots][None, :] == indices[:, None]
        assert torch.equal(exclude, expected)
        for row, sample in enumerate(indices.tolist()):
            drawn = sample in slots.tolist()  # slot i holds sample i
            assert int(exclude[row].sum()) == int(drawn)
            if drawn:
                assert exclude[row, slots.tolist().index(sample)]
        masked_somewhere += int(exclude.sum())
    # Half of the slots are drawn in every step: many anchors meet their own.
    assert masked_somewhere > 0


def test_own_slots_are_excluded_with_a_fifo_bank(step_calls, subspace_data):
    """A FIFO bank may hold a sample in several slots: every drawn one is masked."""
    X, _ = subspace_data
    contrastive(n_negatives=25, bank_update="fifo").fit(X)
    for contrast, mask_call in zip(step_calls["info_nce"], step_calls["own_slots"]):
        slots, indices, owners = mask_call["slots"], mask_call["indices"], mask_call["owners"]
        assert torch.equal(contrast["exclude"], owners[slots][None, :] == indices[:, None])


@pytest.mark.parametrize("n_negatives", [None, 60, 4096])
def test_whole_bank_when_it_is_not_larger_than_n_negatives(step_calls, subspace_data,
                                                           n_negatives):
    X, _ = subspace_data
    contrastive(n_negatives=n_negatives).fit(X)
    assert step_calls["sampled"] == []
    for contrast, mask_call in zip(step_calls["info_nce"], step_calls["own_slots"]):
        assert mask_call["slots"] is None
        assert contrast["negatives"].shape == (60, 8)
        # Each anchor masks exactly one slot: its own.
        assert (contrast["exclude"].sum(1) == 1).all()


def test_whole_bank_fits_are_identical_with_and_without_a_larger_n_negatives(subspace_data):
    """No draw at all when the bank fits: every random stream is the same as with None."""
    X, _ = subspace_data
    whole = contrastive(n_negatives=None).fit(X)
    larger = contrastive(n_negatives=60).fit(X)
    np.testing.assert_array_equal(whole.labels_, larger.labels_)
    np.testing.assert_array_equal(whole.coef_, larger.coef_)
    np.testing.assert_array_equal(whole.embedding_, larger.embedding_)


def test_sampled_fit_is_reproducible_and_differs_from_the_whole_bank(subspace_data):
    X, _ = subspace_data
    first = contrastive(n_negatives=20).fit(X)
    second = contrastive(n_negatives=20).fit(X)
    np.testing.assert_array_equal(first.labels_, second.labels_)
    np.testing.assert_array_equal(first.coef_, second.coef_)
    np.testing.assert_array_equal(first.embedding_, second.embedding_)
    whole = contrastive(n_negatives=None).fit(X)
    assert not np.array_equal(first.embedding_, whole.embedding_)


def test_negatives_generator_is_checkpointed_and_resumed(monkeypatch, tmp_path, subspace_data):
    """The draws' generator is saved: an interrupted fit resumes to the same model."""
    X, _ = subspace_data
    reference = contrastive(n_negatives=20, n_epochs=4).fit(X)
    path = tmp_path / "fit.ckpt"
    model = contrastive(n_negatives=20, n_epochs=4, checkpoint_path=path,
                        checkpoint_interval=0)
    calls = {"n": 0}
    original_run = TrainingSession.run

    def run(self, step, *, stage, **kwargs):
        def interrupting(indices):
            calls["n"] += 1
            if calls["n"] == 7:  # in the second epoch
                raise KeyboardInterrupt
            return step(indices)
        return original_run(self, interrupting if stage == "self-expression" else step,
                            stage=stage, **kwargs)

    monkeypatch.setattr(TrainingSession, "run", run)
    with pytest.raises(KeyboardInterrupt):
        model.fit(X)
    saved = torch.load(path, weights_only=True)
    assert saved["stage"] == "self-expression" and "negatives" in saved["states"]
    monkeypatch.undo()
    model.fit(X)
    np.testing.assert_array_equal(model.labels_, reference.labels_)
    np.testing.assert_array_equal(model.coef_, reference.coef_)
    np.testing.assert_array_equal(model.embedding_, reference.embedding_)
    assert not Path(path).exists()


@pytest.mark.parametrize("value", [0, -3, 2.5, "all"])
def test_invalid_n_negatives_is_rejected(subspace_data, value):
    X, _ = subspace_data
    with pytest.raises(InvalidParameterError,
                       match=r"The 'n_negatives' parameter of ContrastiveDSC must be an int "
                             r"in the range \[1, inf\) or None"):
        contrastive(n_negatives=value).fit(X)


def test_default_n_negatives():
    assert contrastive_module.ContrastiveDSC().n_negatives == 4096
    assert "n_negatives" in contrastive_module.ContrastiveDSC().get_params()


@pytest.mark.parametrize("n_slots, n_draws", [(10, 3), (10, 10), (12, 3), (1000, 10),
                                              (100_000, 4096), (5, 1)])
def test_sampled_slots_are_distinct_and_in_range(n_slots, n_draws):
    generator = torch.Generator().manual_seed(0)
    for _ in range(5):
        slots = _sampled_slots(n_slots, n_draws, generator)
        assert slots.dtype == torch.int64 and slots.shape == (n_draws,)
        assert len(torch.unique(slots)) == n_draws
        assert 0 <= int(slots.min()) and int(slots.max()) < n_slots


@pytest.mark.parametrize("n_slots, n_draws", [(40, 4), (12, 6)])  # sparse and permuted draws
def test_sampled_slots_are_uniform(n_slots, n_draws):
    generator = torch.Generator().manual_seed(1)
    counts = torch.zeros(n_slots)
    pairs = torch.zeros(n_slots, n_slots)
    n_trials = 20000
    for _ in range(n_trials):
        slots = _sampled_slots(n_slots, n_draws, generator)
        counts[slots] += 1
        pairs[slots[:, None], slots[None, :]] += 1
    # Every slot with probability n_draws / n_slots, every pair with
    # n_draws (n_draws - 1) / (n_slots (n_slots - 1)): a uniform subset.
    expected = n_trials * n_draws / n_slots
    assert (counts - expected).abs().max() < 5 * expected ** 0.5
    off_diagonal = pairs[~torch.eye(n_slots, dtype=torch.bool)]
    expected_pair = n_trials * n_draws * (n_draws - 1) / (n_slots * (n_slots - 1))
    assert (off_diagonal - expected_pair).abs().max() < 5.5 * expected_pair ** 0.5


def test_sampled_slots_follow_their_generator():
    first = _sampled_slots(1000, 50, torch.Generator().manual_seed(3))
    again = _sampled_slots(1000, 50, torch.Generator().manual_seed(3))
    other = _sampled_slots(1000, 50, torch.Generator().manual_seed(4))
    assert torch.equal(first, again) and not torch.equal(first, other)
