"""timm image encoders with a projection head, and where their weights come from."""

import os
import socket
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import urlparse

import timm
import torch
import torch.nn.functional as F
from torch import nn

# Weight files that timm's loader reads.
WEIGHT_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin")
# Seconds to wait for the weights' host before calling the download hopeless.
_PROBE_TIMEOUT = 5.0


class ProjectionEncoder(nn.Module):
    """A timm backbone and a projection head giving unit-norm codes.

    Parameters
    ----------
    backbone : torch.nn.Module
        timm model built with ``num_classes=0`` (pooled features out).
    projection_dim : int
        Dimension of the codes.
    mean, std : sequence of float
        Per-channel input normalisation (the backbone's data config).
    input_size : tuple of int or None
        ``(height, width)`` the images are resized to before the backbone;
        ``None`` keeps their size.
    """

    def __init__(self, backbone, projection_dim, mean, std, input_size=None):
        super().__init__()
        self.backbone = backbone
        width = backbone.num_features
        self.head = nn.Sequential(
            nn.Linear(width, width), nn.ReLU(), nn.Linear(width, projection_dim),
        )
        self.register_buffer("mean", torch.as_tensor(mean, dtype=torch.float32)[None, :, None, None])
        self.register_buffer("std", torch.as_tensor(std, dtype=torch.float32)[None, :, None, None])
        self.input_size = None if input_size is None else tuple(input_size)
        self.n_latent = projection_dim
        self.backbone_frozen = False

    def freeze_backbone(self):
        """Stop training the backbone: no gradients, batch-norm statistics fixed."""
        self.backbone.requires_grad_(False)
        self.backbone_frozen = True
        self.backbone.eval()
        return self

    def train(self, mode=True):
        super().train(mode)
        if self.backbone_frozen:
            self.backbone.eval()
        return self

    def features(self, x):
        """Pooled backbone features of images ``(batch, C, H, W)``."""
        if self.input_size is not None and tuple(x.shape[-2:]) != self.input_size:
            x = F.interpolate(x, size=self.input_size, mode="bilinear", align_corners=False,
                              antialias=True)
        return self.backbone((x - self.mean) / self.std)

    def encode(self, x):
        """Unit-norm codes ``(batch, projection_dim)`` of images ``(batch, C, H, W)``."""
        return F.normalize(self.head(self.features(x)), dim=1)

    def forward(self, x):
        return self.encode(x)


def channel_statistics(data_config, in_chans):
    """Normalisation mean and std for ``in_chans`` channels from a timm data config.

    RGB statistics are averaged for other channel counts: timm adapts the first
    convolution of RGB weights to one channel by summing over colours, which
    treats a gray image as three equal colour channels.
    """
    mean, std = tuple(data_config["mean"]), tuple(data_config["std"])
    if len(mean) == in_chans:
        return mean, std
    return (sum(mean) / len(mean),) * in_chans, (sum(std) / len(std),) * in_chans


def create_backbone(name, *, in_chans, image_size, pretrained=False):
    """Build timm model ``name`` without classifier for images of ``image_size``.

    Parameters
    ----------
    name : str
        Any timm model name (``timm.list_models()``), optionally with a
        pretrained tag such as ``"resnet18.a1_in1k"``.
    in_chans : int
        Channels of the input images.
    image_size : tuple of int
        ``(height, width)`` the model will see; passed to models that need a
        fixed input size (vision transformers).
    pretrained : bool, str or path-like, default=False
        ``False`` for random initialisation, ``True`` for timm's published
        weights (from the local cache, else downloaded), or the path of a local
        weights file (``.safetensors``, ``.pth``, ``.pt`` or ``.bin``) under
        timm's names; :func:`convert_state_dict` renames weights saved under
        other names.

    Returns
    -------
    model : torch.nn.Module
    """
    if not isinstance(name, str) or not timm.is_model(name.split(".")[0]):
        raise ValueError(
            f"encoder must be the name of a timm model (see timm.list_models()), got {name!r}."
        )
    kwargs = dict(num_classes=0, in_chans=in_chans)
    if _needs_image_size(name):
        kwargs["img_size"] = tuple(image_size)
    is_path = isinstance(pretrained, (str, os.PathLike))
    if not is_path and not pretrained:
        model = _create(name, kwargs, image_size)
    else:
        weights = pretrained_weights_file(name, pretrained)
        if weights is None:
            # Not cached locally, and the host answered: let timm download.
            model = _create(name, dict(kwargs, pretrained=True), image_size)
        else:
            model = _create(name, dict(kwargs, pretrained=True,
                                       pretrained_cfg_overlay=dict(file=str(weights))), image_size)
            _check_weights_cover_model(model, weights, name)
    _check_accepts(model, name, in_chans, image_size)
    return model


def _check_accepts(model, name, in_chans, image_size):
    """Fail now, with advice, if ``model`` cannot encode images of this size.

    Some models only fail in their forward pass (patch sizes that do not
    divide the image, feature maps shrunk to nothing).
    """
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(torch.zeros(1, in_chans, *image_size))
    except (RuntimeError, ValueError, AssertionError) as exc:
        raise ValueError(_cannot_build(name, in_chans, image_size, exc)) from exc
    finally:
        model.train(was_training)


def _cannot_build(name, in_chans, image_size, exc):
    return (f"timm model {name!r} cannot be built for {in_chans}-channel images of size "
            f"{tuple(image_size)}: {exc}. Choose another encoder or set input_size.")


def _needs_image_size(name):
    config = timm.get_pretrained_cfg(name, allow_unregistered=True)
    return bool(config is not None and getattr(config, "fixed_input_size", False))


def _create(name, kwargs, image_size):
    try:
        return timm.create_model(name, **kwargs)
    except (RuntimeError, ValueError, AssertionError, TypeError) as exc:
        if kwargs.get("pretrained"):
            raise ValueError(
                f"The weights given by pretrained could not be loaded into timm model "
                f"{name!r}: {exc}"
            ) from exc
        raise ValueError(_cannot_build(name, kwargs["in_chans"], image_size, exc)) from exc


def pretrained_weights_file(name, pretrained):
    """Local weights file for ``pretrained``, or None when timm must download.

    Parameters
    ----------
    name : str
        timm model name.
    pretrained : True, str or path-like
        ``True`` asks for timm's published weights; anything else is a path.

    Returns
    -------
    path : pathlib.Path or None
        The file to load; ``None`` when the weights are not cached but their
        host can be reached, so that timm's own download may run.

    Raises
    ------
    FileNotFoundError
        The path does not exist.
    ValueError
        The path is not a weights file, or timm publishes no weights for ``name``.
    OSError
        Weights are asked for, not cached, and their host cannot be reached.
    """
    if isinstance(pretrained, (str, os.PathLike)):
        path = Path(os.fspath(pretrained)).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"pretrained={os.fspath(pretrained)!r}: no such weights file.")
        if path.suffix.lower() not in WEIGHT_SUFFIXES:
            raise ValueError(
                f"pretrained={os.fspath(pretrained)!r} must be a weights file ending in one of "
                f"{', '.join(WEIGHT_SUFFIXES)}."
            )
        return path

    config = timm.get_pretrained_cfg(name, allow_unregistered=False)
    sources = _published_sources(config)
    if not sources:
        raise ValueError(
            f"timm publishes no pretrained weights for encoder={name!r}; use pretrained=False "
            "or the path of a weights file."
        )
    for kind, location in sources:
        cached = _cached_file(kind, location)
        if cached is not None:
            return cached
    failures = []
    for kind, location in sources:
        host = _host_of(kind, location)
        reason = unreachable(host, 443)
        if reason is None:
            return None
        failures.append(f"{host} ({reason})")
    raise OSError(
        f"pretrained=True: the weights of timm model {name!r} are not in the local cache and "
        f"cannot be downloaded: {'; '.join(failures)}. On a machine with network access, "
        f"save them (e.g. timm.create_model({name!r}, pretrained=True) and "
        "torch.save(model.state_dict(), 'weights.pth'), or download the .safetensors file "
        "from the Hugging Face hub) and pass pretrained='/path/to/weights.safetensors' "
        "(or .pth / .bin); or use pretrained=False."
    )


def _published_sources(config):
    """``(kind, location)`` pairs where timm would fetch the weights, preferred first."""
    if config is None:
        return []
    sources = []
    if getattr(config, "hf_hub_id", None):
        sources.append(("hf-hub", config.hf_hub_id))
    if getattr(config, "url", None):
        sources.append(("url", config.url))
    return sources


def _cached_file(kind, location):
    """Path of already downloaded weights, or None."""
    if kind == "url":
        path = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlparse(location).path)
        return path if path.is_file() else None
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:  # pragma: no cover - timm depends on huggingface_hub
        return None
    repo, _, revision = location.partition("@")
    for filename in ("model.safetensors", "pytorch_model.bin", "open_clip_pytorch_model.bin"):
        found = try_to_load_from_cache(repo, filename, revision=revision or None)
        if isinstance(found, str):
            return Path(found)
    return None


def _host_of(kind, location):
    if kind == "url":
        return urlparse(location).hostname
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
    return urlparse(endpoint).hostname


def unreachable(host, port, timeout=_PROBE_TIMEOUT):
    """Why a TCP connection to ``host:port`` fails, or None when it succeeds.

    One quick attempt, so that a machine without network fails at once instead
    of going through the downloader's retries.
    """
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return None
    except OSError as exc:
        return str(exc) or type(exc).__name__


def _check_weights_cover_model(model, weights, name):
    """Refuse a weights file that leaves parameters of ``model`` uninitialised.

    timm's loader tolerates missing keys when it drops the classifier, so a
    file of another architecture would otherwise load silently.
    """
    state = timm.models.load_state_dict(str(weights))
    missing = [key for key in model.state_dict() if key not in state
               and not key.endswith("num_batches_tracked")]
    if missing:
        shown = ", ".join(missing[:5]) + (", ..." if len(missing) > 5 else "")
        raise ValueError(
            f"pretrained={str(weights)!r} does not hold weights for timm model {name!r}: "
            f"{len(missing)} of its tensors are missing ({shown})."
        )


# -- bringing weights saved under other names -----------------------------------------


def load_weights(source):
    """State dict held by ``source``: a mapping of tensors or a weights file.

    Parameters
    ----------
    source : dict or path-like
        A mapping from names to tensors, or the path of a ``.safetensors``,
        ``.pth``, ``.pt`` or ``.bin`` file holding one. A checkpoint that
        wraps its state dict under ``"state_dict"``, ``"model"`` or
        ``"state_dict_ema"`` is unwrapped.

    Returns
    -------
    state_dict : dict of str to torch.Tensor
        The tensors, in the order the source holds them (a ``.safetensors``
        file holds them sorted by name, not in the order they were saved).

    Raises
    ------
    FileNotFoundError
        ``source`` is a path to no file.
    ValueError
        ``source`` is not a mapping or a weights file, or holds no tensors.
    """
    if isinstance(source, (str, os.PathLike)):
        path = Path(os.fspath(source)).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"source={os.fspath(source)!r}: no such weights file.")
        suffix = path.suffix.lower()
        if suffix not in WEIGHT_SUFFIXES:
            raise ValueError(
                f"source={os.fspath(source)!r} must be a weights file ending in one of "
                f"{', '.join(WEIGHT_SUFFIXES)}, or a dict of tensors."
            )
        if suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path), device="cpu")
        else:
            try:
                state = torch.load(path, map_location="cpu", weights_only=True)
            except Exception as exc:  # pickle errors come in many types
                raise ValueError(
                    f"source={os.fspath(source)!r} could not be read as a PyTorch weights "
                    f"file: {exc}"
                ) from exc
        where = f"source={os.fspath(source)!r}"
    elif isinstance(source, Mapping):
        state, where = source, "source"
    else:
        raise ValueError(
            "source must be a dict of tensors or the path of a weights file "
            f"({', '.join(WEIGHT_SUFFIXES)}), got {type(source).__name__}."
        )
    for wrapper in ("state_dict", "model", "state_dict_ema"):
        if isinstance(state, Mapping) and isinstance(state.get(wrapper), Mapping):
            state = state[wrapper]
            break
    if not isinstance(state, Mapping):
        raise ValueError(f"{where} holds a {type(state).__name__}, not a dict of tensors.")
    tensors = {key: value for key, value in state.items() if isinstance(value, torch.Tensor)}
    if not tensors:
        raise ValueError(f"{where} holds no tensors.")
    return tensors


def convert_state_dict(source, model, *, mapping="order"):
    """Rename a state dict saved under other names to a timm model's names.

    Weights published outside timm (another implementation of the same
    architecture) often hold the very tensors timm's model needs under other
    names. This function gives them timm's names, checks every shape, and
    returns a state dict that :func:`save_state_dict` writes to a file usable
    as ``pretrained=PATH`` of :class:`skdsc.ContrastiveDSC` and
    :func:`create_backbone`.

    Parameters
    ----------
    source : dict or path-like
        The state dict to rename, or the path of a ``.safetensors``,
        ``.pth``, ``.pt`` or ``.bin`` file holding it (see
        :func:`load_weights`).
    model : str or torch.nn.Module
        The target: a timm model name (built with its default classifier,
        random weights, to read its names and shapes) or a built model.
    mapping : "order", dict or callable, default="order"
        How source names become timm names.

        - ``"order"``: by position. The source must hold as many tensors as
          the model's state dict, with the same shapes in the same order; the
          i-th source tensor becomes the model's i-th entry. Not for
          ``.safetensors`` files, which store their tensors sorted by name.
        - dict: ``{source_name: timm_name}``. Names absent from the dict are
          kept; a value of ``None`` drops the tensor.
        - callable: ``timm_name = mapping(source_name)``; returning ``None``
          drops the tensor.

    Returns
    -------
    state_dict : dict of str to torch.Tensor
        The source's tensors under the model's names, in the model's order.

    Raises
    ------
    ValueError
        The counts differ (``"order"``), or ``"order"`` is asked of a
        ``.safetensors`` file; a shape, or integer versus floating
        type, differs (the first such pair is named, source name and shape
        beside timm name and shape); after renaming, names of the model are
        missing, names it does not have remain, or two source tensors receive
        one name; or an argument is not of an accepted kind.

    See Also
    --------
    save_state_dict : Write the result to a file for ``pretrained=PATH``.

    Examples
    --------
    >>> import timm
    >>> from skdsc.nn import convert_state_dict
    >>> model = timm.create_model("test_resnet")
    >>> other = {f"layer{i}": t for i, t in enumerate(model.state_dict().values())}
    >>> state = convert_state_dict(other, "test_resnet")
    >>> list(state) == list(model.state_dict())
    True
    """
    target = _target_state(model)
    state = load_weights(source)
    if isinstance(mapping, str):
        if mapping != "order":
            raise ValueError(
                f"mapping must be 'order', a dict or a callable, got {mapping!r}."
            )
        if (isinstance(source, (str, os.PathLike))
                and os.fspath(source).lower().endswith(".safetensors")):
            raise ValueError(
                f"mapping='order' cannot convert source={os.fspath(source)!r}: a .safetensors "
                "file does not keep the order its tensors were saved in (it sorts them). "
                "Pass a dict or a callable as mapping, or a .pth / .bin file."
            )
        return _convert_by_order(state, target, model)
    if isinstance(mapping, Mapping):
        rename = lambda key: mapping.get(key, key)  # noqa: E731
    elif callable(mapping):
        rename = mapping
    else:
        raise ValueError(
            f"mapping must be 'order', a dict or a callable, got {type(mapping).__name__}."
        )
    renamed, origin = {}, {}
    for key, tensor in state.items():
        new = rename(key)
        if new is None:
            continue
        if not isinstance(new, str):
            raise ValueError(
                f"mapping gave {new!r} for source tensor {key!r}; it must give a str or None."
            )
        if new in renamed:
            raise ValueError(
                f"mapping gives the name {new!r} to two source tensors, {origin[new]!r} and "
                f"{key!r}."
            )
        renamed[new], origin[new] = tensor, key
    missing = [key for key in target if key not in renamed]
    unexpected = [origin[key] for key in renamed if key not in target]
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"{len(missing)} tensors of the model get no source tensor "
                         f"({_shown(missing)})")
        if unexpected:
            parts.append(f"{len(unexpected)} source tensors get a name the model does not "
                         f"have ({', '.join(f'{k!r} -> {rename(k)!r}' for k in unexpected[:5])}"
                         f"{', ...' if len(unexpected) > 5 else ''})")
        raise ValueError(f"mapping does not match timm model {_model_label(model)}: "
                         + "; ".join(parts) + ".")
    converted = {}
    for key, expected in target.items():
        _check_pair(origin[key], renamed[key], key, expected, model)
        converted[key] = renamed[key]
    return converted


def save_state_dict(state_dict, path):
    """Write a state dict to a weights file usable as ``pretrained=path``.

    Parameters
    ----------
    state_dict : dict of str to torch.Tensor
        E.g. the result of :func:`convert_state_dict`.
    path : str or path-like
        File to write; its suffix chooses the format: ``.safetensors``
        (safetensors, no pickle) or ``.pth``, ``.pt``, ``.bin``
        (:func:`torch.save`). Missing parent folders are created.

    Returns
    -------
    path : pathlib.Path
        The file written.

    Raises
    ------
    ValueError
        ``path`` has another suffix, or ``state_dict`` is not a dict of tensors.
    """
    path = Path(os.fspath(path)).expanduser()
    suffix = path.suffix.lower()
    if suffix not in WEIGHT_SUFFIXES:
        raise ValueError(
            f"path={os.fspath(path)!r} must end in one of {', '.join(WEIGHT_SUFFIXES)}."
        )
    if not isinstance(state_dict, Mapping) or not state_dict or not all(
            isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state_dict.items()):
        raise ValueError("state_dict must be a non-empty dict of str to torch.Tensor.")
    path.parent.mkdir(parents=True, exist_ok=True)
    # Own, contiguous storage: safetensors refuses shared or strided tensors, and
    # torch.save would otherwise write whole storages of views.
    tensors = {key: value.detach().cpu().contiguous().clone() for key, value in state_dict.items()}
    if suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file(tensors, str(path))
    else:
        torch.save(tensors, path)
    return path


def _target_state(model):
    """The ``{name: tensor}`` a converted state dict must match."""
    if isinstance(model, nn.Module):
        return model.state_dict()
    if not isinstance(model, str) or not timm.is_model(model.split(".")[0]):
        raise ValueError(
            "model must be the name of a timm model (see timm.list_models()) or a "
            f"torch.nn.Module, got {model!r}."
        )
    return timm.create_model(model.split(".")[0], pretrained=False).state_dict()


def _model_label(model):
    return repr(model) if isinstance(model, str) else type(model).__name__


def _shown(keys, n=5):
    return ", ".join(repr(k) for k in keys[:n]) + (", ..." if len(keys) > n else "")


def _check_pair(source_key, tensor, target_key, expected, model):
    """Fail if ``tensor`` cannot stand for the model's ``expected`` tensor."""
    if tuple(tensor.shape) != tuple(expected.shape) or (
            tensor.is_floating_point() != expected.is_floating_point()):
        raise ValueError(
            f"source tensor {source_key!r} {_describe(tensor)} does not fit {target_key!r} "
            f"{_describe(expected)} of timm model {_model_label(model)}."
        )


def _describe(tensor):
    kind = "floating" if tensor.is_floating_point() else "integer"
    return f"(shape {tuple(tensor.shape)}, {kind})"


def _convert_by_order(state, target, model):
    if len(state) != len(target):
        raise ValueError(
            f"mapping='order' needs as many source tensors as timm model "
            f"{_model_label(model)} has: the source holds {len(state)}, the model "
            f"{len(target)}. Pass a dict or a callable as mapping instead."
        )
    converted = {}
    for (source_key, tensor), (key, expected) in zip(state.items(), target.items()):
        _check_pair(source_key, tensor, key, expected, model)
        converted[key] = tensor
    return converted
