"""Clustering accuracy and scorers for model selection."""

import numpy as np
from scipy.optimize import linear_sum_assignment
from sklearn.metrics import silhouette_score
from sklearn.utils.validation import check_consistent_length, column_or_1d


def clustering_accuracy(labels_true, labels_pred):
    """Accuracy under the best one-to-one matching of clusters to classes.

    The matching is found with the Hungarian algorithm on the contingency
    table; clusters or classes left unmatched count as errors.

    Parameters
    ----------
    labels_true : array-like of shape (n_samples,)
        Ground-truth classes (any hashable values).
    labels_pred : array-like of shape (n_samples,)
        Cluster labels to evaluate.

    Returns
    -------
    accuracy : float in [0, 1]

    Examples
    --------
    >>> from skdsc.metrics import clustering_accuracy
    >>> clustering_accuracy([0, 0, 1, 1], [1, 1, 0, 0])
    1.0
    """
    labels_true = column_or_1d(labels_true)
    labels_pred = column_or_1d(labels_pred)
    check_consistent_length(labels_true, labels_pred)
    if labels_true.size == 0:
        raise ValueError("clustering_accuracy needs at least one sample; got empty labels.")
    classes, true_idx = np.unique(labels_true, return_inverse=True)
    clusters, pred_idx = np.unique(labels_pred, return_inverse=True)
    table = np.zeros((len(clusters), len(classes)), dtype=np.int64)
    np.add.at(table, (pred_idx, true_idx), 1)
    rows, cols = linear_sum_assignment(table, maximize=True)
    return float(table[rows, cols].sum() / labels_true.size)


def accuracy_scorer(estimator, X, y):
    """Scorer: :func:`clustering_accuracy` of ``estimator.predict(X)`` against ``y``.

    Uses labels, so it is for evaluation and for model selection where labels
    exist; pass it as ``scoring=accuracy_scorer`` to ``GridSearchCV``.
    """
    if y is None:
        raise ValueError("accuracy_scorer needs true labels y; for label-free model "
                         "selection use embedding_silhouette_scorer.")
    return clustering_accuracy(y, estimator.predict(X))


def embedding_silhouette_scorer(estimator, X, y=None):
    """Label-free scorer: silhouette of the predicted clusters in the latent space.

    Codes come from ``estimator.encode`` (the last step's, for a Pipeline) and
    distances are cosine, matching the angle-based affinity of subspace
    clustering. ``y`` is ignored. A single predicted cluster scores -1.
    """
    final = estimator[-1] if hasattr(estimator, "steps") else estimator
    if hasattr(estimator, "steps"):
        X = estimator[:-1].transform(X)
    labels = final.predict(X)
    if len(np.unique(labels)) < 2 or len(np.unique(labels)) >= len(labels):
        return -1.0
    return float(silhouette_score(final.encode(X), labels, metric="cosine"))
