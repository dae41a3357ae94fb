"""
Fitting over several processes with torchrun
============================================

Fit :class:`~skdsc.MiniBatchDeepSubspaceClustering` data-parallel over several
processes (not run when the documentation is built).

Start this script with torchrun; every process runs it, loads the same data and
calls ``fit``; the first process prints the result.

One machine, two processes of one thread each::

    OMP_NUM_THREADS=1 torchrun --standalone --nproc_per_node=2 fit_distributed.py

Two machines, four processes each (run on each machine, NODE = 0 or 1, HOST the
first machine's address)::

    torchrun --nnodes=2 --node_rank=NODE --nproc_per_node=4 \\
        --master_addr=HOST --master_port=29500 fit_distributed.py
"""

import numpy as np
from sklearn.datasets import load_digits

from skdsc import MiniBatchDeepSubspaceClustering
from skdsc.distributed import DataParallelGroup, init_process_group
from skdsc.metrics import clustering_accuracy

# Optional: the estimators join torchrun's process group by themselves; call
# it first only to choose the backend, the timeout (seconds a process waits
# for the others before it gives up with an error) or exact=True (the fit is
# then, to the last bit, what one process fits, at some speed).
init_process_group(timeout=300)

X, y = load_digits(return_X_y=True)
model = MiniBatchDeepSubspaceClustering(n_clusters=10, image_shape=(8, 8), random_state=0)
model.fit(X)  # every process ends with the same fitted model

if DataParallelGroup.current().is_main:
    print(f"{DataParallelGroup.current().world_size} processes, "
          f"ACC {clustering_accuracy(y, model.labels_):.3f}, "
          f"{len(np.unique(model.labels_))} clusters")
