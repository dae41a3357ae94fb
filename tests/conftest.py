"""Shared fixtures: tiny data and small, fast estimator settings."""

import pytest
import torch

from skdsc import ContrastiveDSC, MiniBatchDeepSubspaceClustering
from skdsc.datasets import make_subspaces

# The models in the suite are tiny: one thread is fastest, and avoids
# oversubscribing small CI machines (several times faster on 2 busy cores).
torch.set_num_threads(1)

# Every hyper-parameter that training depends on is given explicitly, so that
# the tests do not move when the defaults are tuned.
SMALL_PARAMS = dict(
    n_clusters=3, hidden_units=(16, 4), hidden_channels=(4,), kernel_sizes=(3,),
    batch_size=16, n_epochs=5, n_pretrain_epochs=5, learning_rate=1e-3,
    lambda_coef=1.0, lambda_self=1.0, self_expression="dense", n_nonzero=32,
    refresh_epochs=10, bank_update="index", scale_encoder_lr=True,
    bank_momentum=0.0, normalize_losses=False, n_init=1,
    affinity="dsc", threshold=0.1, subspace_dim=4, affinity_power=2.0,
    device="cpu", random_state=0,
)

# A configuration that separates an easy union of subspaces (see
# test_bdsc.py::test_accuracy_on_easy_subspaces); about a second per fit.
ACCURATE_PARAMS = dict(
    SMALL_PARAMS, hidden_units=(32, 8), batch_size=None, n_epochs=300,
    n_pretrain_epochs=100, learning_rate=1e-2, affinity="symmetric", threshold=1.0,
)


# ContrastiveDSC on timm's smallest ResNet (0.4 M parameters, built offline).
SMALL_CONTRASTIVE_PARAMS = dict(
    n_clusters=3, encoder="test_resnet", pretrained=False, projection_dim=8,
    temperature=0.5, batch_size=16, n_epochs=3, n_pretrain_epochs=3, learning_rate=1e-3,
    lambda_coef=1.0, lambda_self=1.0, self_expression="dense", n_nonzero=32,
    refresh_epochs=10, bank_update="index", scale_encoder_lr=True,
    bank_momentum=0.0, normalize_losses=False, n_init=1,
    affinity="dsc", threshold=0.1, subspace_dim=4, affinity_power=2.0,
    device="cpu", random_state=0,
)


def small_estimator(**overrides):
    """A fast estimator for behavioural tests (not expected to be accurate)."""
    return MiniBatchDeepSubspaceClustering(**{**SMALL_PARAMS, **overrides})


def small_contrastive(**overrides):
    """A fast ContrastiveDSC for behavioural tests (not expected to be accurate)."""
    return ContrastiveDSC(**{**SMALL_CONTRASTIVE_PARAMS, **overrides})


SMALL_FACTORIES = {"bdsc": small_estimator, "contrastive": small_contrastive}


@pytest.fixture(scope="session")
def subspace_data():
    """60 samples on 3 planes in R^10, slightly noisy."""
    return make_subspaces(n_clusters=3, n_samples_per_cluster=20, n_features=10,
                          subspace_dim=2, noise=0.01, random_state=0)


@pytest.fixture(scope="session")
def easy_data():
    """90 samples on 3 noiseless planes in R^20."""
    return make_subspaces(n_clusters=3, n_samples_per_cluster=30, n_features=20,
                          subspace_dim=2, noise=0.0, random_state=0)


@pytest.fixture(scope="session")
def fitted_small(subspace_data):
    """A small fitted model; tests must not modify it."""
    X, _ = subspace_data
    return small_estimator().fit(X)


@pytest.fixture(scope="session")
def fitted_accurate(easy_data):
    """A model that clusters ``easy_data`` well; tests must not modify it."""
    X, _ = easy_data
    return MiniBatchDeepSubspaceClustering(**ACCURATE_PARAMS).fit(X)


@pytest.fixture(scope="session")
def fitted_small_contrastive(subspace_data):
    """A small fitted ContrastiveDSC; tests must not modify it."""
    X, _ = subspace_data
    return small_contrastive().fit(X)


@pytest.fixture(params=sorted(SMALL_FACTORIES))
def any_estimator(request, subspace_data):
    """``(factory, fitted)`` for each estimator: for tests that hold for both."""
    fitted = request.getfixturevalue(
        "fitted_small" if request.param == "bdsc" else "fitted_small_contrastive")
    return SMALL_FACTORIES[request.param], fitted


@pytest.fixture
def make_contrastive():
    """Factory: ``make_contrastive(**overrides)`` gives a small ContrastiveDSC."""
    return small_contrastive


@pytest.fixture
def make_estimator():
    """Factory: ``make_estimator(**overrides)`` gives a small estimator."""
    return small_estimator


@pytest.fixture
def accurate_params():
    """The parameters of ``fitted_accurate`` (a fresh dict)."""
    return dict(ACCURATE_PARAMS)
