"""ContrastiveDSC: fitting, timm encoders and their weights, augmentations, persistence."""

import pickle

import joblib
import numpy as np
import pytest
import timm
import torch
from safetensors.torch import save_file
from sklearn.metrics import make_scorer
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer

import skdsc.nn.encoders as encoders
from skdsc import ContrastiveDSC
from skdsc.metrics import clustering_accuracy
from skdsc.nn import ProjectionEncoder


@pytest.fixture(scope="session")
def images():
    """24 random 3-channel 8x8 images in [0, 255], flattened, and 3 labels."""
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, size=(24, 3 * 8 * 8)).astype(np.float64), np.repeat(range(3), 8)


def _backbone_state(model):
    return {k: v.detach().cpu() for k, v in model.network_.backbone.state_dict().items()}


# -- fitting ------------------------------------------------------------------

def test_fitted_attributes(fitted_small_contrastive, subspace_data):
    X, _ = subspace_data
    model = fitted_small_contrastive
    assert model.labels_.shape == (60,)
    assert set(model.labels_) <= {0, 1, 2}
    assert model.coef_.shape == model.affinity_matrix_.shape == (60, 60)
    assert np.all(np.diag(model.coef_) == 0)
    assert model.embedding_.shape == (60, 8)
    # Codes are unit vectors on the projection sphere.
    np.testing.assert_allclose(np.linalg.norm(model.embedding_, axis=1), 1.0, rtol=1e-5)
    assert isinstance(model.network_, ProjectionEncoder)
    assert model.n_iter_ == 3
    phases = [h["phase"] for h in model.history_]
    assert phases == ["pretrain"] * 3 + ["self-expression"] * 3
    assert {"contrastive", "self_expression", "coefficient", "loss"} <= set(model.history_[-1])
    np.testing.assert_allclose(model.encode(X), model.embedding_, atol=1e-5)
    assert model.predict(X).shape == (60,)


@pytest.mark.parametrize("image_shape", [(3, 8, 8), (1, 24, 8), (24, 8)])
def test_fit_images_of_any_channel_count(make_contrastive, images, image_shape):
    """Grayscale and RGB images: the first convolution takes the data's channels."""
    X, _ = images
    model = make_contrastive(image_shape=image_shape).fit(X)
    channels = image_shape[0] if len(image_shape) == 3 else 1
    assert model.network_.backbone.conv1[0].in_channels == channels
    assert model.network_.mean.shape[1] == channels
    assert model.predict(X).shape == (24,)


def test_same_random_state_is_reproducible(make_contrastive, images):
    X, _ = images
    params = dict(image_shape=(3, 8, 8))
    first = make_contrastive(**params).fit(X)
    second = make_contrastive(**params).fit(X)
    np.testing.assert_array_equal(first.labels_, second.labels_)
    np.testing.assert_array_equal(first.coef_, second.coef_)
    other = make_contrastive(**params, random_state=1).fit(X)
    assert not np.allclose(first.coef_, other.coef_)


def test_fit_leaves_global_torch_rng_alone(make_contrastive, images):
    X, _ = images
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    make_contrastive(image_shape=(3, 8, 8)).fit(X)
    torch.testing.assert_close(torch.rand(3), expected)


def test_input_size_resizes_on_the_device(make_contrastive, images):
    """A ViT needs its input size at build time; input_size resizes the images."""
    X, _ = images
    model = make_contrastive(image_shape=(3, 8, 8), encoder="test_vit", input_size=16,
                             n_epochs=1, n_pretrain_epochs=1).fit(X)
    assert model.network_.input_size == (16, 16)
    assert tuple(model.network_.backbone.patch_embed.img_size) == (16, 16)


def test_vit_takes_the_image_size(make_contrastive):
    X = np.random.default_rng(0).random((12, 32 * 16))
    model = make_contrastive(image_shape=(32, 16), encoder="test_vit", n_epochs=1,
                             n_pretrain_epochs=1).fit(X)
    assert tuple(model.network_.backbone.patch_embed.img_size) == (32, 16)


def test_freeze_encoder_trains_only_the_head(make_contrastive, images):
    X, _ = images
    frozen = make_contrastive(image_shape=(3, 8, 8), freeze_encoder=True).fit(X)
    initial = ContrastiveDSC(**{**frozen.get_params(), "n_epochs": 0, "n_pretrain_epochs": 0}).fit(X)
    for name, value in _backbone_state(initial).items():
        torch.testing.assert_close(_backbone_state(frozen)[name], value, msg=name)
    head = frozen.network_.head[0].weight.detach()
    assert not torch.allclose(head, initial.network_.head[0].weight.detach())
    trained = make_contrastive(image_shape=(3, 8, 8)).fit(X)
    assert not torch.allclose(_backbone_state(trained)["conv1.0.weight"],
                              _backbone_state(initial)["conv1.0.weight"])


def test_scale_encoder_lr(make_contrastive, images, monkeypatch):
    """With the rule on, the encoder's learning rate is divided by the batches per epoch."""
    X, _ = images
    rates = []
    original = torch.optim.Adam.__init__

    def spy(self, params, lr=1e-3, **kwargs):
        original(self, params, lr=lr, **kwargs)
        rates.extend(group["lr"] for group in self.param_groups)

    monkeypatch.setattr(torch.optim.Adam, "__init__", spy)
    make_contrastive(image_shape=(3, 8, 8), batch_size=8, learning_rate=1e-2).fit(X)
    make_contrastive(image_shape=(3, 8, 8), batch_size=8, learning_rate=1e-2,
                     scale_encoder_lr=False).fit(X)
    # Pretraining always uses the full rate; 24 samples / 8 = 3 batches.
    assert rates == pytest.approx([1e-2, 1e-2 / 3, 1e-2, 1e-2])


def test_clusters_separable_images():
    """Three kinds of image (flat, horizontal and vertical stripes) are told apart."""
    rng = np.random.default_rng(0)
    stripes = np.tile([0.0, 1.0], 4)
    templates = [np.full((8, 8), 0.5), np.tile(stripes[:, None], (1, 8)),
                 np.tile(stripes[None, :], (8, 1))]
    X = np.stack([templates[k] * rng.uniform(0.7, 1.0) + 0.05 * rng.random((8, 8))
                  for k in range(3) for _ in range(12)]).reshape(36, 64)
    y = np.repeat(range(3), 12)
    model = ContrastiveDSC(
        3, image_shape=(8, 8), encoder="test_resnet", projection_dim=16, batch_size=12,
        n_pretrain_epochs=30, n_epochs=20, learning_rate=3e-3, rotation=0.0, flip=False,
        crop_scale=(0.8, 1.0), affinity="symmetric", threshold=1.0, device="cpu",
        random_state=0,
    ).fit(X)
    assert clustering_accuracy(y, model.labels_) >= 0.9
    assert clustering_accuracy(y, model.predict(X)) >= 0.9


# -- scikit-learn integration -------------------------------------------------

def test_pipeline_and_grid_search(make_contrastive, images):
    X, y = images
    pipe = make_pipeline(FunctionTransformer(lambda a: a / 255.0),
                         make_contrastive(image_shape=(3, 8, 8)))
    assert pipe.fit_predict(X).shape == (24,)
    assert pipe.predict(X).shape == (24,)
    search = GridSearchCV(
        make_contrastive(image_shape=(3, 8, 8)), {"temperature": [0.2, 0.5]}, cv=2,
        scoring=make_scorer(clustering_accuracy),
    ).fit(X, y)
    assert search.best_params_["temperature"] in (0.2, 0.5)


@pytest.mark.parametrize("dump, load", [
    (pickle.dumps, pickle.loads),
    (lambda m: joblib_bytes(m), lambda b: joblib_load(b)),
])
def test_persistence_round_trip(fitted_small_contrastive, subspace_data, dump, load):
    X, _ = subspace_data
    restored = load(dump(fitted_small_contrastive))
    np.testing.assert_array_equal(restored.predict(X), fitted_small_contrastive.predict(X))
    np.testing.assert_allclose(restored.encode(X), fitted_small_contrastive.encode(X))


def joblib_bytes(model):
    import io
    buffer = io.BytesIO()
    joblib.dump(model, buffer)
    return buffer.getvalue()


def joblib_load(data):
    import io
    return joblib.load(io.BytesIO(data))


# -- parameters ---------------------------------------------------------------

@pytest.mark.parametrize("name, value", [
    ("encoder", 3), ("pretrained", 1.5), ("freeze_encoder", "no"), ("input_size", 0),
    ("input_size", "big"), ("projection_dim", 0), ("temperature", 0.0), ("crop_scale", 0.5),
    ("rotation", -1.0), ("rotation", 200.0), ("flip", "yes"), ("color_jitter", 1.5),
    ("n_pretrain_epochs", -1), ("lambda_self", 0.0),
])
def test_invalid_parameter_values(make_contrastive, subspace_data, name, value):
    X, _ = subspace_data
    with pytest.raises(ValueError, match=f"The '{name}' parameter of ContrastiveDSC must be"):
        make_contrastive(**{name: value}).fit(X)


@pytest.mark.parametrize("crop_scale", [(0.0, 1.0), (0.8, 0.5), (0.5, 1.2), (0.5,), ("a", 1)])
def test_bad_crop_scale(make_contrastive, subspace_data, crop_scale):
    X, _ = subspace_data
    with pytest.raises(ValueError, match=r"crop_scale must be \(low, high\) with 0 < low"):
        make_contrastive(crop_scale=crop_scale).fit(X)


@pytest.mark.parametrize("input_size", [(16,), (0, 16), (16.0, 16)])
def test_bad_input_size(make_contrastive, subspace_data, input_size):
    X, _ = subspace_data
    with pytest.raises(ValueError, match="input_size must be a positive int or"):
        make_contrastive(input_size=input_size).fit(X)


@pytest.mark.parametrize("name", ["not_a_model", "resnet18x", ""])
def test_unknown_encoder(make_contrastive, subspace_data, name):
    X, _ = subspace_data
    with pytest.raises(ValueError, match=r"encoder must be the name of a timm model.*list_models"):
        make_contrastive(encoder=name).fit(X)


def test_encoder_that_cannot_take_the_images(make_contrastive, subspace_data):
    """A ViT cannot cut 1 x 10 'images' into 16 x 16 patches: the error says what to do."""
    X, _ = subspace_data
    with pytest.raises(ValueError, match=r"cannot be built for 1-channel images of size "
                                         r"\(1, 10\).*input_size"):
        make_contrastive(encoder="vit_tiny_patch16_224").fit(X)


# -- pretrained weights -------------------------------------------------------

def _save_checkpoint(path, model):
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    if path.suffix == ".safetensors":
        save_file(state, str(path))
    else:
        torch.save(state, path)


@pytest.mark.parametrize("suffix", [".safetensors", ".pth", ".bin"])
def test_local_weights_are_loaded(make_contrastive, images, tmp_path, suffix):
    """A checkpoint of a classifier model loads into the backbone, head dropped."""
    X, _ = images
    source = timm.create_model("test_resnet", num_classes=10)
    path = tmp_path / f"weights{suffix}"
    _save_checkpoint(path, source)
    model = make_contrastive(image_shape=(3, 8, 8), pretrained=path, n_epochs=0,
                             n_pretrain_epochs=0).fit(X)
    loaded = _backbone_state(model)
    expected = {k: v for k, v in source.state_dict().items() if not k.startswith("fc.")}
    assert set(loaded) == set(expected)
    for name, value in expected.items():
        torch.testing.assert_close(loaded[name], value, msg=name)


def test_local_weights_adapt_to_grayscale(make_contrastive, tmp_path):
    """The RGB first convolution becomes a one-channel one (timm sums the colours)."""
    X = np.random.default_rng(0).random((24, 64))
    source = timm.create_model("test_resnet")
    path = tmp_path / "weights.safetensors"
    _save_checkpoint(path, source)
    model = make_contrastive(image_shape=(8, 8), pretrained=str(path), n_epochs=0,
                             n_pretrain_epochs=0).fit(X)
    first = source.state_dict()["conv1.0.weight"]
    torch.testing.assert_close(_backbone_state(model)["conv1.0.weight"],
                               first.sum(dim=1, keepdim=True))
    torch.testing.assert_close(_backbone_state(model)["layer1.0.conv1.weight"],
                               source.state_dict()["layer1.0.conv1.weight"])


def test_weights_fine_tune_from_the_checkpoint(make_contrastive, images, tmp_path):
    """After fitting, the backbone has moved away from the loaded weights."""
    X, _ = images
    source = timm.create_model("test_resnet")
    path = tmp_path / "weights.pth"
    _save_checkpoint(path, source)
    model = make_contrastive(image_shape=(3, 8, 8), pretrained=path).fit(X)
    assert not torch.allclose(_backbone_state(model)["conv1.0.weight"],
                              source.state_dict()["conv1.0.weight"])


def test_weights_of_another_architecture_are_refused(make_contrastive, images, tmp_path):
    X, _ = images
    path = tmp_path / "other.safetensors"
    _save_checkpoint(path, timm.create_model("test_efficientnet"))
    with pytest.raises(ValueError, match=r"could not be loaded into timm model 'test_resnet'|"
                                         r"does not hold weights for timm model 'test_resnet'"):
        make_contrastive(image_shape=(3, 8, 8), pretrained=path).fit(X)


def test_weights_missing_tensors_are_refused(make_contrastive, images, tmp_path):
    """A file that leaves layers uninitialised is an error, not a silent partial load."""
    X, _ = images
    state = {k: v for k, v in timm.create_model("test_resnet").state_dict().items()
             if not k.startswith("layer2.")}
    path = tmp_path / "partial.pth"
    torch.save(state, path)
    with pytest.raises(ValueError, match=r"does not hold weights for timm model 'test_resnet'"
                                         r".*layer2\."):
        make_contrastive(image_shape=(3, 8, 8), pretrained=path).fit(X)


def test_missing_weights_file(make_contrastive, images, tmp_path):
    X, _ = images
    with pytest.raises(FileNotFoundError, match="pretrained=.*nope.pth.*no such weights file"):
        make_contrastive(image_shape=(3, 8, 8), pretrained=str(tmp_path / "nope.pth")).fit(X)


def test_weights_file_with_unknown_suffix(make_contrastive, images, tmp_path):
    X, _ = images
    path = tmp_path / "weights.txt"
    path.write_text("not weights")
    with pytest.raises(ValueError, match=r"must be a weights file ending in one of "
                                         r"\.safetensors, \.pth"):
        make_contrastive(image_shape=(3, 8, 8), pretrained=path).fit(X)


@pytest.fixture
def no_network(monkeypatch):
    """Nothing cached, every host unreachable, and any download attempt fails the test."""
    monkeypatch.setattr(encoders, "_cached_file", lambda kind, location: None)
    monkeypatch.setattr(encoders, "unreachable",
                        lambda host, port, timeout=None: "[Errno -2] Name or service not known")

    def download(*args, **kwargs):
        raise AssertionError("the network was used")

    import timm.models._builder as builder
    monkeypatch.setattr(builder, "load_state_dict_from_hf", download)
    monkeypatch.setattr(builder, "load_state_dict_from_url", download)


def test_pretrained_true_offline_fails_at_once(make_contrastive, images, no_network):
    """Without network the error names the host and the local-path alternative."""
    X, _ = images
    with pytest.raises(OSError, match=r"(?s)weights of timm model 'test_resnet' are not in the "
                                      r"local cache.*huggingface\.co.*pretrained='/path/to/"):
        make_contrastive(image_shape=(3, 8, 8), pretrained=True).fit(X)


def test_pretrained_true_uses_cached_weights(make_contrastive, images, tmp_path, monkeypatch,
                                              no_network):
    """Weights already in the cache load with no network at all."""
    X, _ = images
    source = timm.create_model("test_resnet")
    path = tmp_path / "model.safetensors"
    _save_checkpoint(path, source)
    monkeypatch.setattr(encoders, "_cached_file", lambda kind, location: path)
    model = make_contrastive(image_shape=(3, 8, 8), pretrained=True, n_epochs=0,
                             n_pretrain_epochs=0).fit(X)
    torch.testing.assert_close(_backbone_state(model)["conv1.0.weight"],
                               source.state_dict()["conv1.0.weight"])


def test_pretrained_true_without_published_weights(make_contrastive, images, no_network,
                                                   monkeypatch):
    X, _ = images
    monkeypatch.setattr(encoders, "_published_sources", lambda config: [])
    with pytest.raises(ValueError, match="timm publishes no pretrained weights for "
                                         "encoder='test_resnet'"):
        make_contrastive(image_shape=(3, 8, 8), pretrained=True).fit(X)


def test_unreachable_host_is_reported_quickly():
    """A refused local connection is reported, not retried."""
    import socket
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        port = server.getsockname()[1]
    reason = encoders.unreachable("127.0.0.1", port, timeout=1.0)
    assert reason is not None and "refused" in reason.lower()
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        assert encoders.unreachable("127.0.0.1", server.getsockname()[1], timeout=1.0) is None


def test_pretrained_true_downloads_through_timm_when_online(make_contrastive, images, monkeypatch):
    """Not cached and the host answers: timm's own download path is taken."""
    X, _ = images
    source = timm.create_model("test_resnet")
    calls = []

    def download(*args, **kwargs):
        calls.append(args)
        return {k: v.clone() for k, v in source.state_dict().items()}

    import timm.models._builder as builder
    monkeypatch.setattr(encoders, "_cached_file", lambda kind, location: None)
    monkeypatch.setattr(encoders, "unreachable", lambda host, port, timeout=None: None)
    monkeypatch.setattr(builder, "load_state_dict_from_hf", download)
    model = make_contrastive(image_shape=(3, 8, 8), pretrained=True, n_epochs=0,
                             n_pretrain_epochs=0).fit(X)
    assert calls and "test_resnet" in calls[0][0]
    torch.testing.assert_close(_backbone_state(model)["layer1.0.conv1.weight"],
                               source.state_dict()["layer1.0.conv1.weight"])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_fit_on_cuda_and_predict_after_pickling(make_contrastive, images):
    """Training and augmentations run on the GPU; the pickle holds CPU tensors."""
    X, _ = images
    model = make_contrastive(image_shape=(3, 8, 8), device="cuda").fit(X)
    assert model.device_.type == "cuda"
    assert next(model.network_.parameters()).is_cuda
    restored = pickle.loads(pickle.dumps(model))
    np.testing.assert_array_equal(restored.predict(X), model.predict(X))
