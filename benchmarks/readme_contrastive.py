"""The README's ContrastiveDSC quick start, scored with both spectral embedding sizes.

Fits the example exactly as the README shows it (scikit-learn's 8x8 digits,
``encoder="resnet18"``, 30 pretraining and 5 training epochs, seed 0) on one
torch thread, prints ACC, NMI and the fit time of its labels (the default
``n_components="auto"``), then reads the labels again from the same ``coef_``
with ``n_components=n_clusters`` (the earlier default). Labels only score.

Usage::

    python benchmarks/readme_contrastive.py
"""

import time

import torch
from sklearn.datasets import load_digits
from sklearn.metrics import normalized_mutual_info_score

from study_label_assignment import relabel
from skdsc import ContrastiveDSC
from skdsc.metrics import clustering_accuracy


def main():
    torch.set_num_threads(1)
    X, y = load_digits(return_X_y=True)
    X = X / 16.0
    model = ContrastiveDSC(n_clusters=10, image_shape=(1, 8, 8), encoder="resnet18",
                           n_pretrain_epochs=30, n_epochs=5, random_state=0)
    start = time.perf_counter()
    labels = model.fit_predict(X)
    seconds = time.perf_counter() - start
    print(f"n_components='auto': ACC {clustering_accuracy(y, labels):.3f}, "
          f"NMI {normalized_mutual_info_score(y, labels):.3f}, fit {seconds:.0f} s")
    labels = relabel(model, n_components=model.n_clusters)
    print(f"n_components={model.n_clusters}: ACC {clustering_accuracy(y, labels):.3f}, "
          f"NMI {normalized_mutual_info_score(y, labels):.3f}")


if __name__ == "__main__":
    main()
