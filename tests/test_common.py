"""scikit-learn's estimator checks, run on small, fast settings.

One check is not applicable and is listed in ``expected_failed_checks``; the
parts of it that do apply are tested in test_bdsc.py. sklearn itself skips
``check_array_api_input`` unless the environment sets SCIPY_ARRAY_API=1.
"""

from sklearn.utils.estimator_checks import parametrize_with_checks

from skdsc import ContrastiveDSC, MiniBatchDeepSubspaceClustering


def _small_estimator(**overrides):
    return MiniBatchDeepSubspaceClustering(**{**dict(
        n_clusters=3, hidden_units=(16, 4), batch_size=16, n_epochs=5, n_pretrain_epochs=5,
        learning_rate=1e-3, lambda_coef=1.0, lambda_self=1.0, threshold=0.1,
        subspace_dim=4, affinity_power=2.0, device="cpu", random_state=0,
    ), **overrides})


def _small_contrastive(**overrides):
    return ContrastiveDSC(**{**dict(
        n_clusters=3, encoder="test_resnet", projection_dim=8, batch_size=16, n_epochs=3,
        n_pretrain_epochs=3, learning_rate=1e-3, subspace_dim=4, affinity_power=2.0,
        device="cpu", random_state=0,
    ), **overrides})


def _expected_failed_checks(estimator):
    if isinstance(estimator, ContrastiveDSC) or estimator.self_expression == "sparse":
        return {}
    return {
        "check_clustering": (
            "asks for ARI > 0.4 on three 2-D Gaussian blobs (make_blobs, standardised). "
            "Blobs are not a union of linear subspaces, so the self-expressive model "
            "does not describe them; with these settings ARI ranges 0.07-0.78 across "
            "seeds. The rest of this check (fit_predict == labels_, integer labels "
            "in range, list and read-only input) is in test_bdsc.py."
        ),
    }


# The sparse mode (n_nonzero=8 candidates of the checks' 30-odd samples) runs
# every check too, with its sparse coef_ and affinity_matrix_.
@parametrize_with_checks([_small_estimator(), _small_contrastive(),
                          _small_estimator(self_expression="sparse", n_nonzero=8,
                                           threshold="auto"),
                          _small_contrastive(self_expression="sparse", n_nonzero=8)],
                         expected_failed_checks=_expected_failed_checks)
def test_sklearn_compatible_estimator(estimator, check):
    check(estimator)
