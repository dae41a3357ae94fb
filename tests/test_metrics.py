"""Clustering accuracy and the scorers (skdsc.metrics)."""

import numpy as np
import pytest
from sklearn.base import BaseEstimator
from sklearn.metrics import silhouette_score
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer

from skdsc.metrics import accuracy_scorer, clustering_accuracy, embedding_silhouette_scorer

# -- clustering_accuracy ------------------------------------------------------


def test_accuracy_ignores_label_names():
    """Clusters are matched to classes: a renaming of the labels is still perfect."""
    y = np.array([0, 0, 1, 1, 2, 2, 2])
    assert clustering_accuracy(y, y) == 1.0
    assert clustering_accuracy(y, np.array([2, 0, 1])[y]) == 1.0
    assert clustering_accuracy(["a", "a", "b", "b"], [7, 7, 3, 3]) == 1.0


def test_accuracy_counts_errors():
    assert clustering_accuracy([0, 0, 0, 1, 1, 1], [1, 1, 0, 0, 0, 0]) == pytest.approx(5 / 6)
    # Best matching 0->1, 1->0 (4 correct), not 0->0.
    assert clustering_accuracy([0, 0, 0, 1, 1], [1, 1, 1, 0, 1]) == pytest.approx(4 / 5)


def test_accuracy_with_unequal_numbers_of_clusters():
    """Unmatched clusters or classes count as errors."""
    assert clustering_accuracy([0, 0, 1, 1], [0, 1, 2, 3]) == pytest.approx(0.5)
    assert clustering_accuracy([0, 1, 2, 3], [0, 0, 0, 0]) == pytest.approx(0.25)
    assert clustering_accuracy([0, 0, 0, 1, 1, 2], [5, 5, 5, 6, 6, 6]) == pytest.approx(5 / 6)


def test_accuracy_is_symmetric_in_its_arguments():
    rng = np.random.RandomState(0)
    a, b = rng.randint(0, 4, 50), rng.randint(0, 6, 50)
    assert clustering_accuracy(a, b) == pytest.approx(clustering_accuracy(b, a))


def test_accuracy_errors():
    with pytest.raises(ValueError, match="inconsistent numbers of samples"):
        clustering_accuracy([0, 1, 1], [0, 1])
    with pytest.raises(ValueError, match="at least one sample"):
        clustering_accuracy([], [])
    with pytest.raises(ValueError, match="1d array"):
        clustering_accuracy(np.zeros((3, 2)), np.zeros((3, 2)))


# -- scorers ------------------------------------------------------------------

class _FixedClusterer(BaseEstimator):
    """Predicts cluster ``x[0] > 0`` and encodes a row as itself."""

    def fit(self, X, y=None):
        self.fitted_ = True
        return self

    def predict(self, X):
        return (np.asarray(X)[:, 0] > 0).astype(int)

    def encode(self, X):
        return np.asarray(X, dtype=float)


@pytest.fixture
def blobs():
    rng = np.random.RandomState(0)
    X = np.vstack([rng.normal([2, 1], 0.3, (10, 2)), rng.normal([-2, 1], 0.3, (10, 2))])
    y = np.repeat([1, 0], 10)
    return X, y


def test_accuracy_scorer(blobs):
    X, y = blobs
    est = _FixedClusterer().fit(X)
    assert accuracy_scorer(est, X, y) == clustering_accuracy(y, est.predict(X)) == 1.0
    y_mixed = y.copy()
    y_mixed[:5] = 0  # 5 of 20 rows now disagree with any matching
    assert accuracy_scorer(est, X, y_mixed) == pytest.approx(0.75)


def test_accuracy_scorer_needs_labels(blobs):
    X, _ = blobs
    with pytest.raises(ValueError, match="accuracy_scorer needs true labels y"):
        accuracy_scorer(_FixedClusterer().fit(X), X, None)


def test_silhouette_scorer(blobs):
    """Cosine silhouette of the codes under the predicted clusters; y is ignored."""
    X, y = blobs
    est = _FixedClusterer().fit(X)
    expected = silhouette_score(X, est.predict(X), metric="cosine")
    assert embedding_silhouette_scorer(est, X) == pytest.approx(expected)
    assert embedding_silhouette_scorer(est, X, y[::-1]) == pytest.approx(expected)


def test_silhouette_scorer_in_pipeline(blobs):
    """In a Pipeline, the last step predicts and encodes the transformed rows."""
    X, _ = blobs
    shift = FunctionTransformer(lambda Z: Z - np.array([1.0, 0.0]))
    pipe = Pipeline([("shift", shift), ("clu", _FixedClusterer())]).fit(X)
    Z = X - np.array([1.0, 0.0])
    expected = silhouette_score(Z, (Z[:, 0] > 0).astype(int), metric="cosine")
    assert embedding_silhouette_scorer(pipe, X) == pytest.approx(expected)
    assert embedding_silhouette_scorer(pipe, X) != pytest.approx(
        embedding_silhouette_scorer(_FixedClusterer().fit(X), X))


def test_silhouette_scorer_single_cluster_scores_minus_one(blobs):
    X, _ = blobs
    X = np.abs(X)  # every row predicted as cluster 1
    assert embedding_silhouette_scorer(_FixedClusterer().fit(X), X) == -1.0
