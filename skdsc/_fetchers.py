"""Download, verify and cache the standard subspace clustering data sets.

Every remote file is described by a :class:`RemoteFile` in :data:`REMOTE_FILES`
(file name in the cache, URL, published sha256). A file is downloaded once into
the data home (see :func:`get_data_home`), verified **before** it is moved into
place, and verified again each time it is read from the cache.

Checksum sources
----------------
- ``ORL_32x32.mat`` and ``COIL20.mat``: the copies in
  ``panji530/Deep-subspace-clustering-networks`` (``Data/``), the files used by
  DSC-Net (Ji et al., 2017). The sha256 values were computed from local copies
  that are byte-identical to those repository blobs (git blob ids
  ``e56ae1a0b8cb...`` and ``d6eeb64693af...``).
- ``mnist.npz``: the file distributed by Keras; its sha256 is the ``file_hash``
  in ``keras.datasets.mnist.load_data``.
- ``coil-100.zip``: the archive from the Columbia CAVE web site; its sha256 (and
  size, 130,688,843 bytes) is the one registered by TensorFlow Datasets for
  ``coil100`` (``tensorflow_datasets/datasets/coil100/checksums.tsv``).

All remote files can be fetched from a mirror instead: set the environment
variable ``SKDSC_MIRROR`` to a base URL, and each file is downloaded from
``{SKDSC_MIRROR}/{filename}`` (same checksums).
"""

import hashlib
import http.client
import logging
import os
import re
import tempfile
import urllib.error
import urllib.request
import warnings
import zipfile
from collections import namedtuple
from numbers import Integral
from pathlib import Path

import numpy as np
from sklearn.utils import Bunch

from ._loaders import load_mat

__all__ = [
    "REMOTE_FILES",
    "RemoteFile",
    "fetch_coil20",
    "fetch_coil100",
    "fetch_mnist",
    "fetch_orl",
    "get_data_home",
]

logger = logging.getLogger(__name__)

RemoteFile = namedtuple("RemoteFile", ["filename", "url", "sha256"])
RemoteFile.__doc__ = """Description of a remote file.

Parameters
----------
filename : str
    Name of the file in the data home.
url : str
    Where the file is downloaded from.
sha256 : str
    Expected SHA-256 digest of the file, in hexadecimal.
"""

_DSC_NET_DATA = (
    "https://raw.githubusercontent.com/panji530/Deep-subspace-clustering-networks/master/Data/"
)

#: The remote files behind the fetchers, by data set. Replace an entry (for
#: instance to point at a mirror) to change where that file is downloaded from.
REMOTE_FILES = {
    "orl": RemoteFile(
        filename="ORL_32x32.mat",
        url=_DSC_NET_DATA + "ORL_32x32.mat",
        sha256="c30cb53be2cab2da293eaeb35c1a7c16cad513fa14d0400ad5ed51f03e1ce7c8",
    ),
    "coil20": RemoteFile(
        filename="COIL20.mat",
        url=_DSC_NET_DATA + "COIL20.mat",
        sha256="2a35c105dbb327492b90389e55612bcbf39187bc7c408252239903e4ce7d6958",
    ),
    "coil100": RemoteFile(
        filename="coil-100.zip",
        url="https://www.cs.columbia.edu/CAVE/databases/SLAM_coil-20_coil-100/coil-100/coil-100.zip",
        sha256="fcb4b8b01c0778f416d8d7a09f45082c4f7075cc74743dcddd5c44307bd4afe7",
    ),
    "mnist": RemoteFile(
        filename="mnist.npz",
        url="https://storage.googleapis.com/tensorflow/tf-keras-datasets/mnist.npz",
        sha256="731c5ac602752760c8e48fbffcf8c3b850d9dc2a2aedcf2cc48468fc17b673d1",
    ),
}

# Seconds that a connection, or a read from it, may block.
_TIMEOUT = 60
_CHUNK_SIZE = 1 << 20


# -- data home and download ------------------------------------------------------------

def get_data_home(data_home=None):
    """Return the path of the skdsc data folder, creating it if needed.

    Downloaded files are kept there, so that each is downloaded only once.
    The folder is, in order of precedence: ``data_home``; the environment
    variable ``SKDSC_DATA``; ``~/skdsc_data``. A leading ``~`` is expanded to
    the user's home folder.

    Parameters
    ----------
    data_home : str or path-like, default=None
        The folder to use. If None, see above.

    Returns
    -------
    data_home : str
        The path of the data folder.
    """
    if data_home is None:
        data_home = os.environ.get("SKDSC_DATA", os.path.join("~", "skdsc_data"))
    data_home = os.path.expanduser(os.fspath(data_home))
    os.makedirs(data_home, exist_ok=True)
    return data_home


def _remote_url(remote):
    mirror = os.environ.get("SKDSC_MIRROR")
    if mirror:
        return mirror.rstrip("/") + "/" + remote.filename
    return remote.url


def _sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK_SIZE), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _fetch_file(remote, data_home, download_if_missing):
    """Path of the verified cached copy of ``remote``, downloading it if needed."""
    path = Path(get_data_home(data_home)) / remote.filename
    url = _remote_url(remote)
    if path.exists():
        found = _sha256(path)
        if found != remote.sha256:
            raise OSError(
                f"The cached file {path} is corrupted or is not the expected file: its "
                f"sha256 is {found}, expected {remote.sha256}. Delete it, then call "
                f"again to download it afresh from {url}."
            )
        return path
    if not download_if_missing:
        raise FileNotFoundError(
            f"{remote.filename} was not found in {path.parent} and "
            f"download_if_missing=False. Call with download_if_missing=True to "
            f"download it from {url}, or download it yourself and place it at {path}."
        )
    _download(url, remote.sha256, path)
    return path


def _download(url, sha256, path):
    """Download ``url`` to ``path`` atomically, after checking its sha256.

    The content goes to a temporary file beside ``path``; only a complete file
    with the right checksum is renamed to ``path``, so that an interrupted or
    failed download leaves nothing behind.
    """
    manual = (
        f"To install the file by hand, download {url} yourself (sha256 {sha256}) "
        f"and place it at {path}, or pass data_home=<a folder that holds "
        f"{path.name}>."
    )
    logger.info("Downloading %s to %s", url, path)
    fd, temp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    try:
        digest = hashlib.sha256()
        with os.fdopen(fd, "wb") as out:
            request = urllib.request.Request(url, headers={"User-Agent": "skdsc"})
            try:
                with urllib.request.urlopen(request, timeout=_TIMEOUT) as response:
                    length = response.headers.get("Content-Length")
                    received = 0
                    for chunk in iter(lambda: response.read(_CHUNK_SIZE), b""):
                        out.write(chunk)
                        digest.update(chunk)
                        received += len(chunk)
            except urllib.error.HTTPError as exc:
                raise OSError(
                    f"Could not download {url}: HTTP error {exc.code} ({exc.reason}). {manual}"
                ) from exc
            except urllib.error.URLError as exc:
                raise OSError(f"Could not download {url}: {exc.reason}. {manual}") from exc
            except (http.client.HTTPException, OSError) as exc:
                # Timeouts, reset connections and content cut short.
                reason = f"{type(exc).__name__}: {exc}".rstrip(": ")
                raise OSError(f"Could not download {url}: {reason}. {manual}") from exc
        if length is not None and length.isdigit() and received != int(length):
            raise OSError(
                f"Could not download {url}: received {received} bytes of the "
                f"{int(length)} announced. {manual}"
            )
        found = digest.hexdigest()
        if found != sha256:
            raise OSError(
                f"The file downloaded from {url} has sha256 {found}, expected "
                f"{sha256}; it was not saved. The download may be corrupted or the "
                f"file may have changed on the server. {manual}"
            )
        os.replace(temp_name, path)
    except BaseException:
        try:
            os.unlink(temp_name)
        except FileNotFoundError:
            pass
        raise


def _bunch(X, y, images, image_shape, descr, return_X_y, **extra):
    if return_X_y:
        return X, y
    return Bunch(data=X, target=y, images=images, image_shape=image_shape, DESCR=descr, **extra)


# -- ORL and COIL-20 (Deng Cai's .mat files) ----------------------------------------

_ORL_DESCR = """\
ORL (AT&T) face database, 32x32
-------------------------------
400 grayscale face images of 40 people, 10 each, 32x32 pixels (Deng Cai's
downsampled version of the 92x112 originals), as used by DSC-Net.

Source: ORL_32x32.mat from github.com/panji530/Deep-subspace-clustering-networks
(Data/ORL_32x32.mat).

Citation: F. Samaria and A. Harter, "Parameterisation of a stochastic model for
human face identification", IEEE Workshop on Applications of Computer Vision,
1994.
"""

_COIL20_DESCR = """\
COIL-20 (Columbia Object Image Library), 32x32
----------------------------------------------
1440 grayscale images of 20 objects on a turntable, 72 views each (every 5
degrees), 32x32 pixels (Deng Cai's version of the processed 128x128 images), as
used by DSC-Net.

Source: COIL20.mat from github.com/panji530/Deep-subspace-clustering-networks
(Data/COIL20.mat).

Citation: S. A. Nene, S. K. Nayar and H. Murase, "Columbia Object Image Library
(COIL-20)", Technical Report CUCS-005-96, Columbia University, 1996.
"""


def _fetch_deng_cai(name, image_shape, descr, data_home, download_if_missing, return_X_y):
    path = _fetch_file(REMOTE_FILES[name], data_home, download_if_missing)
    X, y = load_mat(path, image_shape)
    return _bunch(X, y, X.reshape(-1, *image_shape), image_shape, descr, return_X_y)


def fetch_orl(*, data_home=None, download_if_missing=True, return_X_y=False):
    """Load the ORL face data set, 32x32 (40 classes).

    =================   ==============
    Classes                         40
    Samples per class               10
    Samples total                  400
    Dimensionality                1024
    Features            float, [0, 1]
    =================   ==============

    The file (0.4 MB) is downloaded on first use into ``data_home``.

    Parameters
    ----------
    data_home : str or path-like, default=None
        Folder where the data are cached; see :func:`get_data_home`.
    download_if_missing : bool, default=True
        If False, raise ``OSError`` instead of downloading a missing file.
    return_X_y : bool, default=False
        If True, return ``(data, target)`` instead of a Bunch.

    Returns
    -------
    data : :class:`~sklearn.utils.Bunch`
        Dictionary-like object, with the following attributes.

        data : ndarray of shape (400, 1024), dtype float32
            Images flattened in C (row-major) order, values in [0, 1]
            (the 8-bit grey levels divided by 255).
        target : ndarray of shape (400,), dtype int64
            Person index, 0 to 39.
        images : ndarray of shape (400, 32, 32), dtype float32
            The upright images, ``data.reshape(-1, 32, 32)``.
        image_shape : tuple
            ``(32, 32)``, to pass as an estimator's ``image_shape``.
        DESCR : str
            Description, source and citation.

    (data, target) : tuple if ``return_X_y`` is True

    Raises
    ------
    OSError
        If the file cannot be downloaded, if its checksum is wrong, or if it is
        missing and ``download_if_missing`` is False. The message gives the
        URL and the path where the file can be placed by hand.
    """
    return _fetch_deng_cai("orl", (32, 32), _ORL_DESCR, data_home, download_if_missing,
                           return_X_y)


def fetch_coil20(*, data_home=None, download_if_missing=True, return_X_y=False):
    """Load the COIL-20 object data set, 32x32 grayscale (20 classes).

    =================   ==============
    Classes                         20
    Samples per class               72
    Samples total                 1440
    Dimensionality                1024
    Features            float, [0, 1]
    =================   ==============

    The file (3 MB) is downloaded on first use into ``data_home``.

    Parameters
    ----------
    data_home : str or path-like, default=None
        Folder where the data are cached; see :func:`get_data_home`.
    download_if_missing : bool, default=True
        If False, raise ``OSError`` instead of downloading a missing file.
    return_X_y : bool, default=False
        If True, return ``(data, target)`` instead of a Bunch.

    Returns
    -------
    data : :class:`~sklearn.utils.Bunch`
        Dictionary-like object, with the following attributes.

        data : ndarray of shape (1440, 1024), dtype float32
            Images flattened in C (row-major) order, values in [0, 1] (as
            stored in the file).
        target : ndarray of shape (1440,), dtype int64
            Object index, 0 to 19.
        images : ndarray of shape (1440, 32, 32), dtype float32
            The upright images, ``data.reshape(-1, 32, 32)``.
        image_shape : tuple
            ``(32, 32)``, to pass as an estimator's ``image_shape``.
        DESCR : str
            Description, source and citation.

    (data, target) : tuple if ``return_X_y`` is True

    Raises
    ------
    OSError
        If the file cannot be downloaded, if its checksum is wrong, or if it is
        missing and ``download_if_missing`` is False. The message gives the
        URL and the path where the file can be placed by hand.
    """
    return _fetch_deng_cai("coil20", (32, 32), _COIL20_DESCR, data_home,
                           download_if_missing, return_X_y)


# -- COIL-100 (the original PNG archive) --------------------------------------------

_COIL100_DESCR = """\
COIL-100 (Columbia Object Image Library)
----------------------------------------
7200 colour images of 100 objects on a turntable, 72 views each (every 5
degrees), decoded from the original 128x128 RGB PNG files. Here: {size},
{colour}.

Source: coil-100.zip from the Columbia CAVE web site,
https://www.cs.columbia.edu/CAVE/software/softlib/coil-100.php

Citation: S. A. Nene, S. K. Nayar and H. Murase, "Columbia Object Image Library
(COIL-100)", Technical Report CUCS-006-96, Columbia University, 1996.
"""

_COIL100_NAME = re.compile(r"(?:^|/)obj(\d+)__(\d+)\.png$")


def fetch_coil100(*, image_size=32, color=False, data_home=None, download_if_missing=True,
                  return_X_y=False):
    """Load the COIL-100 object data set (100 classes).

    =================   ==============
    Classes                        100
    Samples per class               72
    Samples total                 7200
    Dimensionality      image_size**2 (x3 in colour)
    Features            float, [0, 1]
    =================   ==============

    The original archive (131 MB of 128x128 RGB PNG files) is downloaded on
    first use into ``data_home`` and decoded at each call (some seconds).

    Images are resized with bilinear interpolation without anti-aliasing
    (:func:`torch.nn.functional.interpolate`, ``align_corners=False``; the same
    sampling as OpenCV's ``cv2.resize`` with ``INTER_LINEAR``) and rounded to
    8 bits. Grayscale images are then the ITU-R 601 luma
    ``0.299 R + 0.587 G + 0.114 B`` of the resized colour image, rounded to 8
    bits (as Pillow's ``convert("L")``). The 32x32 grayscale images are thus
    close to, but not byte-identical with, the ``COIL100.mat`` used in the
    subspace clustering literature, whose exact preprocessing is not published.

    Parameters
    ----------
    image_size : int or None, default=32
        Height and width of the returned images. None keeps the original
        128x128.
    color : bool, default=False
        If True, keep the three RGB channels; otherwise convert to grayscale.
    data_home : str or path-like, default=None
        Folder where the data are cached; see :func:`get_data_home`.
    download_if_missing : bool, default=True
        If False, raise ``OSError`` instead of downloading a missing file.
    return_X_y : bool, default=False
        If True, return ``(data, target)`` instead of a Bunch.

    Returns
    -------
    data : :class:`~sklearn.utils.Bunch`
        Dictionary-like object, with the following attributes.

        data : ndarray of shape (7200, n_features), dtype float32
            Images flattened in C (row-major) order, values in [0, 1] (the
            8-bit values divided by 255). ``n_features`` is
            ``image_size ** 2``, times 3 with ``color=True``, where each row is
            a ``(3, image_size, image_size)`` channel-first image.
        target : ndarray of shape (7200,), dtype int64
            Object index, 0 to 99 (object ``objN`` has label ``N - 1``).
        images : ndarray, dtype float32
            The upright images, ``data.reshape(-1, *image_shape)``.
        image_shape : tuple
            ``(image_size, image_size)``, or ``(3, image_size, image_size)``
            with ``color=True``; to pass as an estimator's ``image_shape``.
        angle : ndarray of shape (7200,), dtype int64
            Turntable angle of each view in degrees, 0 to 355.
        DESCR : str
            Description, source and citation.

        Rows are ordered by object, then by angle.

    (data, target) : tuple if ``return_X_y`` is True

    Raises
    ------
    OSError
        If the file cannot be downloaded, if its checksum is wrong, or if it is
        missing and ``download_if_missing`` is False. The message gives the
        URL and the path where the file can be placed by hand.
    """
    if image_size is not None and (
        not isinstance(image_size, Integral) or isinstance(image_size, bool) or image_size < 1
    ):
        raise ValueError(f"image_size must be a positive int or None, got {image_size!r}.")
    path = _fetch_file(REMOTE_FILES["coil100"], data_home, download_if_missing)
    images, objects, angles = _read_coil100(path, image_size, color)
    _, y = np.unique(objects, return_inverse=True)
    y = y.astype(np.int64)
    images = (images / np.float32(255)).astype(np.float32)
    image_shape = images.shape[1:]
    X = images.reshape(len(images), -1)
    height, width = image_shape[-2:]
    descr = _COIL100_DESCR.format(size=f"{height}x{width} pixels",
                                  colour="RGB (channel first)" if color else "grayscale")
    return _bunch(X, y, images, image_shape, descr, return_X_y, angle=angles)


def _read_coil100(path, image_size, color):
    """uint8 images (n, H, W) or (n, 3, H, W), object numbers and angles."""
    import torch
    from torch.nn.functional import interpolate
    from torchvision.io import ImageReadMode, decode_png

    with zipfile.ZipFile(path) as archive:
        members = []
        for name in archive.namelist():
            match = _COIL100_NAME.search(name)
            if match:
                members.append((int(match.group(1)), int(match.group(2)), name))
        if not members:
            raise OSError(f"{path} holds no COIL-100 image (objN__A.png).")
        members.sort()
        images = []
        for _, _, name in members:
            encoded = torch.frombuffer(bytearray(archive.read(name)), dtype=torch.uint8)
            with warnings.catch_warnings():
                # torchvision >= 0.29 deprecates its image codecs (in favour of
                # TorchCodec); decode_png still works and adds no dependency.
                warnings.simplefilter("ignore", DeprecationWarning)
                image = decode_png(encoded, mode=ImageReadMode.RGB)
            if image_size is not None and image.shape[1:] != (image_size, image_size):
                image = interpolate(image[None].float(), size=(image_size, image_size),
                                    mode="bilinear", align_corners=False, antialias=False)[0]
                image = image.round().clamp(0, 255).to(torch.uint8)
            images.append(image)
    shapes = {tuple(image.shape) for image in images}
    if len(shapes) > 1:
        raise ValueError(
            f"The images in {path} differ in size ({sorted(shapes)}); pass an int "
            "image_size to resize them."
        )
    images = torch.stack(images).numpy()
    if not color:
        luma = images.astype(np.float32).transpose(0, 2, 3, 1) @ np.float32([0.299, 0.587, 0.114])
        images = np.clip(np.round(luma), 0, 255).astype(np.uint8)
    objects = np.array([obj for obj, _, _ in members], dtype=np.int64)
    angles = np.array([angle for _, angle, _ in members], dtype=np.int64)
    return images, objects, angles


# -- MNIST --------------------------------------------------------------------------

_MNIST_DESCR = """\
MNIST handwritten digits
------------------------
{n} grayscale images of the digits 0-9, 28x28 pixels ({subset}).

Source: mnist.npz as distributed by Keras,
https://storage.googleapis.com/tensorflow/tf-keras-datasets/mnist.npz
(the canonical images and labels of http://yann.lecun.com/exdb/mnist/).

Citation: Y. LeCun, L. Bottou, Y. Bengio and P. Haffner, "Gradient-based
learning applied to document recognition", Proceedings of the IEEE 86(11),
2278-2324, 1998.
"""

_MNIST_SUBSETS = {
    "train": (["x_train"], ["y_train"], "the 60,000 training images"),
    "test": (["x_test"], ["y_test"], "the 10,000 test images"),
    "all": (["x_train", "x_test"], ["y_train", "y_test"],
            "the 60,000 training then the 10,000 test images"),
}


def fetch_mnist(*, subset="all", data_home=None, download_if_missing=True,
                return_X_y=False):
    """Load the MNIST handwritten digits (10 classes).

    =================   ==============
    Classes                         10
    Samples total                70000 (60000 train, 10000 test)
    Dimensionality                 784
    Features            float, [0, 1]
    =================   ==============

    The file (11 MB) is downloaded on first use into ``data_home``.

    Parameters
    ----------
    subset : {"all", "train", "test"}, default="all"
        Which images to return: the training set, the test set, or both
        (training images first).
    data_home : str or path-like, default=None
        Folder where the data are cached; see :func:`get_data_home`.
    download_if_missing : bool, default=True
        If False, raise ``OSError`` instead of downloading a missing file.
    return_X_y : bool, default=False
        If True, return ``(data, target)`` instead of a Bunch.

    Returns
    -------
    data : :class:`~sklearn.utils.Bunch`
        Dictionary-like object, with the following attributes.

        data : ndarray of shape (n_samples, 784), dtype float32
            Images flattened in C (row-major) order, values in [0, 1] (the
            8-bit grey levels divided by 255). ``n_samples`` is 70000, 60000
            or 10000 depending on ``subset``.
        target : ndarray of shape (n_samples,), dtype int64
            The digit, 0 to 9.
        images : ndarray of shape (n_samples, 28, 28), dtype float32
            The upright images, ``data.reshape(-1, 28, 28)``.
        image_shape : tuple
            ``(28, 28)``, to pass as an estimator's ``image_shape``.
        DESCR : str
            Description, source and citation.

    (data, target) : tuple if ``return_X_y`` is True

    Raises
    ------
    OSError
        If the file cannot be downloaded, if its checksum is wrong, or if it is
        missing and ``download_if_missing`` is False. The message gives the
        URL and the path where the file can be placed by hand.
    """
    if subset not in _MNIST_SUBSETS:
        raise ValueError(f"subset must be one of {sorted(_MNIST_SUBSETS)}, got {subset!r}.")
    image_keys, label_keys, what = _MNIST_SUBSETS[subset]
    path = _fetch_file(REMOTE_FILES["mnist"], data_home, download_if_missing)
    with np.load(path) as contents:
        images = np.concatenate([contents[key] for key in image_keys])
        y = np.concatenate([contents[key] for key in label_keys]).astype(np.int64)
    images = (images / np.float32(255)).astype(np.float32)
    image_shape = images.shape[1:]
    X = images.reshape(len(images), -1)
    descr = _MNIST_DESCR.format(n=f"{len(X):,}", subset=what)
    return _bunch(X, y, images, image_shape, descr, return_X_y)
