"""Resumable fits, clean interruption, out-of-memory errors and portable pickles."""

import os
import pickle
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.exceptions import NotFittedError
from sklearn.utils.validation import check_is_fitted

from skdsc import CheckpointError
from skdsc._checkpoint import TrainingSession

from conftest import SMALL_FACTORIES, small_estimator

REPO = Path(__file__).resolve().parents[1]


def assert_same_model(a, b):
    np.testing.assert_array_equal(a.labels_, b.labels_)
    coef_a = a.coef_.toarray() if hasattr(a.coef_, "toarray") else a.coef_
    coef_b = b.coef_.toarray() if hasattr(b.coef_, "toarray") else b.coef_
    np.testing.assert_array_equal(coef_a, coef_b)
    np.testing.assert_array_equal(a.embedding_, b.embedding_)


def replace_self_expression_step(monkeypatch, replacement):
    """Run ``replacement`` instead of every step of the self-expressive phase."""
    original_run = TrainingSession.run

    def run(self, step, *, stage, **kwargs):
        return original_run(self, replacement if stage == "self-expression" else step,
                            stage=stage, **kwargs)
    monkeypatch.setattr(TrainingSession, "run", run)


def interrupt_at_step(monkeypatch, phase, at_call):
    """Make the ``at_call``-th step of ``phase`` raise KeyboardInterrupt (once)."""
    calls = {"n": 0, "armed": True}

    def wrap(step):
        def interrupting(indices):
            calls["n"] += 1
            if calls["armed"] and calls["n"] == at_call:
                calls["armed"] = False
                raise KeyboardInterrupt
            return step(indices)
        return interrupting

    original_run = TrainingSession.run

    def run(self, step, *, stage, **kwargs):
        return original_run(self, wrap(step) if stage == phase else step, stage=stage,
                            **kwargs)
    monkeypatch.setattr(TrainingSession, "run", run)
    return calls


def leave_checkpoint(model, X):
    """Fit ``model`` (which has a checkpoint_path) and interrupt it mid-training."""
    with pytest.MonkeyPatch.context() as mp:
        interrupt_at_step(mp, "self-expression", 5)
        with pytest.raises(KeyboardInterrupt):
            model.fit(X)
    assert Path(model.checkpoint_path).exists()


# -- resuming ---------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["bdsc", "contrastive"])
@pytest.mark.parametrize("phase", ["pretrain", "self-expression"])
@pytest.mark.parametrize("mode", ["dense", "sparse"])
def test_interrupted_fit_resumes_to_the_uninterrupted_result(
        monkeypatch, tmp_path, subspace_data, images_or_rows, name, phase, mode):
    """KeyboardInterrupt mid-phase, then the same fit again: same model as no interruption."""
    X = images_or_rows[name]
    params = dict(self_expression=mode, n_nonzero=5, refresh_epochs=2, n_epochs=5)
    reference = SMALL_FACTORIES[name](**params).fit(X)

    path = tmp_path / "fit.ckpt"
    model = SMALL_FACTORIES[name](**params, checkpoint_path=path, checkpoint_interval=0)
    # Batches per epoch: 60 samples in batches of 16 -> 4 (the last one merged: 3).
    calls = interrupt_at_step(monkeypatch, phase, at_call=8)
    with pytest.raises(KeyboardInterrupt):
        model.fit(X)
    with pytest.raises(NotFittedError):
        check_is_fitted(model)
    saved = torch.load(path, weights_only=True)
    assert saved["stage"] == phase and saved["epoch"] >= 1

    steps_before = calls["n"]
    model.fit(X)
    resumed_steps = calls["n"] - steps_before
    assert_same_model(model, reference)
    assert not path.exists(), "the checkpoint is removed once the fit has finished"
    # History records every epoch once, as in the uninterrupted fit.
    strip = [{k: v for k, v in h.items() if k != "seconds"} for h in model.history_]
    expected = [{k: v for k, v in h.items() if k != "seconds"} for h in reference.history_]
    assert strip == expected
    if phase == "self-expression":
        # Only the epochs after the checkpoint are trained again (4 batches each).
        assert resumed_steps == (5 - saved["epoch"]) * 4


def test_interrupted_augmented_pretraining_resumes(monkeypatch, tmp_path, subspace_data):
    """The views' random stream is saved too: resuming gives the uninterrupted model."""
    X = np.abs(np.repeat(subspace_data[0], 4, axis=1))  # 60 images of 5x8
    params = dict(image_shape=(5, 8), hidden_channels=(), pretrain_augmentation=True,
                  n_pretrain_epochs=4)
    reference = small_estimator(**params).fit(X)
    path = tmp_path / "fit.ckpt"
    model = small_estimator(**params, checkpoint_path=path, checkpoint_interval=0)
    interrupt_at_step(monkeypatch, "pretrain", at_call=10)
    with pytest.raises(KeyboardInterrupt):
        model.fit(X)
    assert torch.load(path, weights_only=True)["stage"] == "pretrain"
    model.fit(X)
    assert_same_model(model, reference)


@pytest.fixture(scope="module")
def images_or_rows(subspace_data):
    """Rows for MiniBatchDeepSubspaceClustering, 3x8x8 images for ContrastiveDSC."""
    X, _ = subspace_data
    rng = np.random.default_rng(0)
    images = np.abs(np.repeat(X, 20, axis=1)[:, :192] + 0.05 * rng.normal(size=(60, 192)))
    return {"bdsc": X, "contrastive": images.astype(np.float32)}


@pytest.fixture(autouse=True)
def contrastive_images_shape(monkeypatch):
    """The contrastive factory gets the image shape of ``images_or_rows``."""
    original = SMALL_FACTORIES["contrastive"]
    monkeypatch.setitem(SMALL_FACTORIES, "contrastive",
                        lambda **kw: original(image_shape=(3, 8, 8), **kw))


_CHILD = textwrap.dedent("""
    import sys
    import numpy as np
    import torch
    torch.set_num_threads(1)
    from skdsc import MiniBatchDeepSubspaceClustering
    from skdsc.datasets import make_subspaces

    X, _ = make_subspaces(n_clusters=3, n_samples_per_cluster=40, n_features=10,
                          subspace_dim=2, noise=0.01, random_state=0)
    checkpoint = sys.argv[2] if sys.argv[2] != "-" else None
    model = MiniBatchDeepSubspaceClustering(
        3, hidden_units=(32, 4), batch_size=8, n_pretrain_epochs=20, n_epochs=120,
        learning_rate=1e-3, lambda_self=1.0, random_state=0, device="cpu",
        checkpoint_path=checkpoint, checkpoint_interval=0).fit(X)
    np.savez(sys.argv[1], labels=model.labels_, coef=model.coef_,
             embedding=model.embedding_)
""")


def run_child(tmp_path, result, checkpoint, **popen):
    script = tmp_path / "child.py"
    script.write_text(_CHILD)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    return subprocess.Popen([sys.executable, str(script), str(result), str(checkpoint)],
                            env=env, stderr=subprocess.PIPE, **popen)


def test_killed_process_resumes_to_the_uninterrupted_result(tmp_path):
    """SIGKILL a fitting process mid-training; a new process finishes it identically."""
    checkpoint = tmp_path / "fit.ckpt"
    reference = run_child(tmp_path, tmp_path / "reference.npz", "-")
    victim = run_child(tmp_path, tmp_path / "victim.npz", checkpoint)
    deadline = time.monotonic() + 120
    stage = epoch = None
    while time.monotonic() < deadline and victim.poll() is None:
        if checkpoint.exists():
            try:
                saved = torch.load(checkpoint, weights_only=True)
            except Exception:  # the file is only ever replaced whole
                raise AssertionError("a checkpoint was read half-written")
            stage, epoch = saved["stage"], saved["epoch"]
            if stage == "self-expression" and epoch >= 5:
                victim.send_signal(signal.SIGKILL)
                break
        time.sleep(0.02)
    victim.wait()
    assert victim.returncode == -signal.SIGKILL, "the fit ended before it could be killed"
    assert not (tmp_path / "victim.npz").exists()
    saved = torch.load(checkpoint, weights_only=True)
    assert saved["stage"] == "self-expression" and 5 <= saved["epoch"] < 120

    resumed = run_child(tmp_path, tmp_path / "resumed.npz", checkpoint)
    assert resumed.wait(timeout=300) == 0, resumed.stderr.read().decode()
    assert reference.wait(timeout=300) == 0, reference.stderr.read().decode()
    expected, got = np.load(tmp_path / "reference.npz"), np.load(tmp_path / "resumed.npz")
    for key in ("labels", "coef", "embedding"):
        np.testing.assert_array_equal(got[key], expected[key])
    assert not checkpoint.exists()


# -- refused checkpoints ----------------------------------------------------------------

def test_corrupt_checkpoint_is_refused(tmp_path, subspace_data):
    X, _ = subspace_data
    path = tmp_path / "fit.ckpt"
    path.write_bytes(b"not a checkpoint at all")
    model = small_estimator(checkpoint_path=path)
    with pytest.raises(CheckpointError, match="cannot be read.*Delete it"):
        model.fit(X)
    assert path.read_bytes() == b"not a checkpoint at all", "the file is left as it was"
    with pytest.raises(NotFittedError):
        check_is_fitted(model)


def test_truncated_checkpoint_is_refused(tmp_path, subspace_data):
    X, _ = subspace_data
    path = tmp_path / "fit.ckpt"
    model = small_estimator(checkpoint_path=path, checkpoint_interval=0)
    leave_checkpoint(model, X)
    saved_bytes = path.read_bytes()
    path.write_bytes(saved_bytes[: len(saved_bytes) // 2])
    with pytest.raises(CheckpointError, match="corrupt"):
        model.fit(X)


def test_foreign_file_is_refused(tmp_path, subspace_data):
    X, _ = subspace_data
    path = tmp_path / "fit.ckpt"
    torch.save({"model": torch.zeros(3)}, path)
    with pytest.raises(CheckpointError, match="not a skdsc fit checkpoint"):
        small_estimator(checkpoint_path=path).fit(X)


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_malicious_pickle_is_not_executed(tmp_path, subspace_data):
    """Checkpoints are read with weights_only: a pickle that runs code is refused."""
    X, _ = subspace_data
    marker = tmp_path / "executed"

    class Payload:
        def __reduce__(self):
            return (Path.touch, (marker,))

    path = tmp_path / "fit.ckpt"
    with open(path, "wb") as file:
        pickle.dump({"format": "skdsc-fit-checkpoint", "payload": Payload()}, file)
    with pytest.raises(CheckpointError, match="cannot be read"):
        small_estimator(checkpoint_path=path).fit(X)
    assert not marker.exists()


@pytest.mark.parametrize("change", ["parameters", "data", "estimator"])
def test_checkpoint_of_another_fit_is_refused(tmp_path, subspace_data, change):
    X, _ = subspace_data
    path = tmp_path / "fit.ckpt"
    leave_checkpoint(small_estimator(checkpoint_path=path, checkpoint_interval=0), X)
    if change == "parameters":
        other, data = small_estimator(checkpoint_path=path, lambda_self=2.0), X
    elif change == "data":
        other, data = small_estimator(checkpoint_path=path), X[::-1]
    else:
        other, data = SMALL_FACTORIES["contrastive"](checkpoint_path=path), np.abs(
            np.repeat(X, 20, axis=1)[:, :192])
    with pytest.raises(CheckpointError, match="other parameters or other data"):
        other.fit(data)
    assert path.exists()


def test_parameters_that_do_not_change_the_fit_may_differ(tmp_path, subspace_data):
    X, _ = subspace_data
    path = tmp_path / "fit.ckpt"
    leave_checkpoint(small_estimator(checkpoint_path=path, checkpoint_interval=0), X)
    resumed = small_estimator(checkpoint_path=str(path), checkpoint_interval=30.0,
                              verbose=0).fit(X)
    assert_same_model(resumed, small_estimator().fit(X))


def test_checkpoint_is_written_atomically(monkeypatch, tmp_path, subspace_data):
    """A save that fails half-way leaves the previous checkpoint and no temporary file."""
    import skdsc._checkpoint as checkpoint_module

    X, _ = subspace_data
    path = tmp_path / "fit.ckpt"
    real_save = torch.save
    saves = {"n": 0}

    def failing_save(obj, file):
        saves["n"] += 1
        if saves["n"] == 4:
            file.write(b"partial")
            raise OSError("disk full")
        real_save(obj, file)

    monkeypatch.setattr(checkpoint_module.torch, "save", failing_save)
    model = small_estimator(checkpoint_path=path, checkpoint_interval=0)
    with pytest.raises(OSError, match="disk full"):
        model.fit(X)
    assert [p.name for p in tmp_path.iterdir()] == ["fit.ckpt"]
    saved = torch.load(path, weights_only=True)
    assert saved["stage"] == "pretrain" and saved["epoch"] == 3


def test_checkpoint_interval_limits_saves(monkeypatch, tmp_path, subspace_data):
    import skdsc._checkpoint as checkpoint_module

    X, _ = subspace_data
    saved = []
    original = checkpoint_module.FitCheckpoint.save
    monkeypatch.setattr(checkpoint_module.FitCheckpoint, "save",
                        lambda self, state: saved.append((state["stage"], state["epoch"]))
                        or original(self, state))
    small_estimator(checkpoint_path=tmp_path / "a.ckpt", checkpoint_interval=3600).fit(X)
    # Only the end of each phase and the start of self-expression.
    assert saved == [("pretrain", 5), ("self-expression", 0), ("self-expression", 5)]
    saved.clear()
    small_estimator(checkpoint_path=tmp_path / "b.ckpt", checkpoint_interval=0).fit(X)
    assert len(saved) == 5 + 1 + 5


def test_checkpoint_folder_must_exist(tmp_path, subspace_data):
    X, _ = subspace_data
    with pytest.raises(FileNotFoundError, match="checkpoint_path=.*does not exist"):
        small_estimator(checkpoint_path=tmp_path / "missing" / "fit.ckpt").fit(X)
    with pytest.raises(IsADirectoryError, match="is a folder"):
        small_estimator(checkpoint_path=tmp_path).fit(X)


# -- interruption and failures ----------------------------------------------------------

def test_interrupt_keeps_the_previous_fit(monkeypatch, subspace_data):
    """Ctrl-C during a refit leaves the earlier fitted model whole and usable."""
    X, _ = subspace_data
    model = small_estimator().fit(X)
    before = {k: v for k, v in vars(model).items() if k.endswith("_")}
    predicted = model.predict(X)
    interrupt_at_step(monkeypatch, "self-expression", 2)
    with pytest.raises(KeyboardInterrupt):
        model.fit(X[:45])
    after = {k: v for k, v in vars(model).items() if k.endswith("_")}
    assert after.keys() == before.keys()
    assert all(after[k] is before[k] for k in before)
    np.testing.assert_array_equal(model.predict(X), predicted)


def test_interrupt_of_a_first_fit_leaves_it_unfitted(monkeypatch, subspace_data):
    X, _ = subspace_data
    model = small_estimator()
    interrupt_at_step(monkeypatch, "pretrain", 2)
    with pytest.raises(KeyboardInterrupt):
        model.fit(X)
    assert not [k for k in vars(model) if k.endswith("_") and not k.startswith("__")]
    with pytest.raises(NotFittedError):
        model.predict(X)


@pytest.mark.parametrize("mode", ["dense", "sparse"])
def test_out_of_memory_names_estimate_and_remedies(monkeypatch, subspace_data, mode):
    X, _ = subspace_data
    def exhausted(indices):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")

    replace_self_expression_step(monkeypatch, exhausted)
    model = small_estimator(self_expression=mode, n_nonzero=5)
    with pytest.raises(MemoryError) as info:
        model.fit(X)
    message = str(info.value)
    assert "ran out of memory on cpu" in message and "Tried to allocate 20.00 GiB" in message
    assert "batch_size (now 16" in message
    expected = 16 * 60 ** 2 if mode == "dense" else 24 * 60 * 5
    assert f"{expected / 2 ** 20:.1f} MiB" in message
    if mode == "dense":
        assert "self_expression='sparse'" in message
    else:
        assert "n_nonzero (now 5)" in message
    assert isinstance(info.value.__cause__, torch.OutOfMemoryError)
    with pytest.raises(NotFittedError):
        check_is_fitted(model)


def test_other_runtime_errors_pass_through(monkeypatch, subspace_data):
    X, _ = subspace_data
    def broken(indices):
        raise RuntimeError("shape mismatch")

    replace_self_expression_step(monkeypatch, broken)
    with pytest.raises(RuntimeError, match="shape mismatch"):
        small_estimator().fit(X)


def test_verbose_shows_epoch_losses_and_time_left(capsys, subspace_data):
    X, _ = subspace_data
    small_estimator(verbose=2).fit(X)
    err = capsys.readouterr().err
    assert "[pretrain] epoch 1/5: loss=" in err
    assert "[self-expression] epoch 5/5: loss=" in err and "self_expression=" in err
    assert err.count(" left)") == 10


# -- portability ------------------------------------------------------------------------

def test_model_fitted_on_cuda_loads_without_cuda(monkeypatch, subspace_data):
    """A pickle of a CUDA-fitted model loads on a CUDA-less machine, with a warning.

    The CUDA fit is simulated: the model says it was fitted on ``cuda`` (its
    pickle holds CPU tensors, as ``__getstate__`` makes it), and the load runs
    in a process where CUDA is hidden.
    """
    X, _ = subspace_data
    model = small_estimator().fit(X)
    expected = model.predict(X)
    model.device_ = torch.device("cuda", 0)
    payload = pickle.dumps(model)
    model.device_ = torch.device("cpu")

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.warns(UserWarning, match="fitted on cuda:0 but CUDA is not available"):
        loaded = pickle.loads(payload)
    assert loaded.device_ == torch.device("cpu")
    assert next(loaded.network_.parameters()).device.type == "cpu"
    np.testing.assert_array_equal(loaded.predict(X), expected)


def test_cuda_pickle_loads_in_a_process_without_cuda(tmp_path, subspace_data):
    X, _ = subspace_data
    model = small_estimator().fit(X)
    np.save(tmp_path / "expected.npy", model.predict(X))
    model.device_ = torch.device("cuda", 0)
    (tmp_path / "model.pkl").write_bytes(pickle.dumps(model))
    np.save(tmp_path / "X.npy", X)
    script = textwrap.dedent(f"""
        import pickle, warnings
        import numpy as np
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            model = pickle.loads(open({str(tmp_path / 'model.pkl')!r}, "rb").read())
        assert any("CUDA is not available" in str(w.message) for w in caught), caught
        X = np.load({str(tmp_path / 'X.npy')!r})
        assert (model.predict(X) == np.load({str(tmp_path / 'expected.npy')!r})).all()
        print("ok")
    """)
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"
