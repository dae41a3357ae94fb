"""Data set fetchers (skdsc.datasets.fetch_*), end to end against a local HTTP server."""

import hashlib
import io
import shutil
import socket
import threading
import time
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
import torch
from numpy.testing import assert_allclose, assert_array_equal
from scipy.io import savemat
from torchvision.io import encode_png

from skdsc import _fetchers
from skdsc._fetchers import RemoteFile
from skdsc.datasets import (
    fetch_coil20, fetch_coil100, fetch_mnist, fetch_orl, get_data_home, load_mat,
)

REPO_ROOT = Path(__file__).resolve().parents[1]
# encode_png, used to write the test archive, is deprecated in torchvision >= 0.29.
pytestmark = pytest.mark.filterwarnings("ignore:.*TorchVision.*:DeprecationWarning")

SHARED_DATA_DIRS = [Path("/work/shared/data"), REPO_ROOT.parent / "shared" / "data"]


def sha256(content):
    return hashlib.sha256(content).hexdigest()


# -- a real HTTP server on 127.0.0.1 ---------------------------------------------------

class _Handler(BaseHTTPRequestHandler):
    """Serves ``server.files``; ``server.modes[name]`` makes a response misbehave."""

    def do_GET(self):
        server = self.server
        server.requests.append(self.path)
        name = self.path.lstrip("/")
        if name not in server.files:
            self.send_error(404, "Not Found")
            return
        body = server.files[name]
        mode = server.modes.get(name)
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if mode == "truncate":  # announce the whole file, send half, hang up
            body = body[: len(body) // 2]
        elif mode == "stall":
            time.sleep(0.5)
        self.wfile.write(body)

    def log_message(self, *args):
        pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):
        pass  # the client hung up on a stalled response: expected here


@pytest.fixture
def server():
    httpd = _Server(("127.0.0.1", 0), _Handler)
    httpd.files, httpd.modes, httpd.requests = {}, {}, []
    httpd.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()
    thread.join()


@pytest.fixture(autouse=True)
def isolated_environment(tmp_path, monkeypatch):
    """No mirror, and a default data home inside the test's folder."""
    monkeypatch.delenv("SKDSC_MIRROR", raising=False)
    monkeypatch.setenv("SKDSC_DATA", str(tmp_path / "default_home"))


def publish(server, monkeypatch, dataset, content, *, filename=None, sha=None):
    """Serve ``content`` and point the registry entry of ``dataset`` at it."""
    filename = filename or _fetchers.REMOTE_FILES[dataset].filename
    server.files[filename] = content
    remote = RemoteFile(filename, f"{server.url}/{filename}", sha or sha256(content))
    monkeypatch.setitem(_fetchers.REMOTE_FILES, dataset, remote)
    return remote


def files_in(folder):
    return sorted(p.name for p in Path(folder).iterdir()) if Path(folder).exists() else []


# -- small files in the published layouts ----------------------------------------------

def deng_cai_mat(images, labels):
    """A .mat in Deng Cai's layout: one image per row, flattened column-major."""
    buffer = io.BytesIO()
    fea = np.stack([image.flatten(order="F") for image in images])
    savemat(buffer, {"fea": fea, "gnd": np.asarray(labels).reshape(-1, 1)})
    return buffer.getvalue()


def orl_like():
    rng = np.random.RandomState(0)
    images = rng.randint(0, 200, (5, 32, 32)).astype(np.uint8)
    images[0] = 0
    images[0, 0, 5] = 255  # one bright pixel in the top row: a transposition shows
    labels = np.array([3, 3, 1, 1, 2], dtype=np.uint8)
    return deng_cai_mat(images, labels), images, labels


def mnist_like():
    rng = np.random.RandomState(1)
    arrays = {
        "x_train": rng.randint(0, 256, (3, 28, 28)).astype(np.uint8),
        "y_train": np.array([5, 0, 9], dtype=np.uint8),
        "x_test": rng.randint(0, 256, (2, 28, 28)).astype(np.uint8),
        "y_test": np.array([7, 1], dtype=np.uint8),
    }
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue(), arrays


# Stored out of order, with a multi-digit object number, as in the real archive.
COIL100_NAMES = ["obj10__0", "obj2__5", "obj1__355", "obj2__0", "obj1__0"]
COIL100_SORTED = ["obj1__0", "obj1__355", "obj2__0", "obj2__5", "obj10__0"]


def coil100_like(size=8):
    """A coil-100.zip with a few RGB PNGs (H, W, 3) and a stray non-image file."""
    rng = np.random.RandomState(2)
    images = {name: rng.randint(0, 256, (size, size, 3)).astype(np.uint8)
              for name in COIL100_NAMES}
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("coil-100/convertGroupppm2png.pl", b"# not an image\n")
        for name, image in images.items():
            png = encode_png(torch.from_numpy(image).permute(2, 0, 1).contiguous())
            archive.writestr(f"coil-100/{name}.png", png.numpy().tobytes())
    return buffer.getvalue(), images


# -- get_data_home ---------------------------------------------------------------------

def test_get_data_home_precedence(tmp_path, monkeypatch):
    explicit = tmp_path / "explicit" / "nested"
    assert get_data_home(explicit) == str(explicit)
    assert explicit.is_dir()

    monkeypatch.setenv("SKDSC_DATA", str(tmp_path / "from_env"))
    assert get_data_home() == str(tmp_path / "from_env")
    assert (tmp_path / "from_env").is_dir()

    monkeypatch.delenv("SKDSC_DATA")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert get_data_home() == str(tmp_path / "home" / "skdsc_data")
    assert (tmp_path / "home" / "skdsc_data").is_dir()


# -- the Deng Cai .mat files: ORL and COIL-20 -----------------------------------------

@pytest.mark.parametrize("fetch, dataset", [(fetch_orl, "orl"), (fetch_coil20, "coil20")])
def test_fetch_mat_end_to_end(fetch, dataset, server, monkeypatch, tmp_path):
    content, images, labels = orl_like()
    remote = publish(server, monkeypatch, dataset, content)
    home = tmp_path / "home"

    bunch = fetch(data_home=home)

    assert bunch.data.shape == (5, 1024) and bunch.data.dtype == np.float32
    assert bunch.image_shape == (32, 32)
    assert_allclose(bunch.images, images / 255.0, rtol=1e-6)
    assert_array_equal(bunch.data, bunch.images.reshape(5, -1))
    # Upright: the bright pixel of row 0, column 5 is there, not at (5, 0).
    assert bunch.images[0, 0, 5] == 1.0 and bunch.images[0, 5, 0] == 0.0
    assert bunch.target.dtype == np.int64
    assert_array_equal(bunch.target, labels - 1)  # 1..3 -> 0..2
    assert "Citation" in bunch.DESCR

    # Cached: the second call does not reach the server; no temporary file left.
    X, y = fetch(data_home=home, return_X_y=True)
    assert server.requests == [f"/{remote.filename}"]
    assert_array_equal(X, bunch.data)
    assert_array_equal(y, bunch.target)
    assert files_in(home) == [remote.filename]


def test_default_data_home_is_used(server, monkeypatch, tmp_path):
    content, _, _ = orl_like()
    publish(server, monkeypatch, "orl", content)
    fetch_orl()
    assert files_in(tmp_path / "default_home") == ["ORL_32x32.mat"]


def test_mirror_environment_variable(server, monkeypatch, tmp_path):
    content, _, _ = orl_like()
    server.files["ORL_32x32.mat"] = content
    # The registered URL is unreachable; the mirror serves the same file.
    monkeypatch.setitem(_fetchers.REMOTE_FILES, "orl", RemoteFile(
        "ORL_32x32.mat", "http://127.0.0.1:9/unreachable/ORL_32x32.mat", sha256(content)))
    monkeypatch.setenv("SKDSC_MIRROR", server.url + "/")

    assert fetch_orl(data_home=tmp_path).data.shape == (5, 1024)
    assert server.requests == ["/ORL_32x32.mat"]


# -- failures: nothing is cached, and the message says what to do ---------------------

@pytest.mark.parametrize("served", ["wrong file", "cut file"])
def test_wrong_checksum_is_rejected(served, server, monkeypatch, tmp_path):
    content, _, _ = orl_like()
    remote = publish(server, monkeypatch, "orl", content)
    if served == "wrong file":
        server.files[remote.filename] = content[::-1]
    else:  # shorter than published, with an honest Content-Length
        server.files[remote.filename] = content[: len(content) // 2]
    got = sha256(server.files[remote.filename])

    with pytest.raises(OSError) as excinfo:
        fetch_orl(data_home=tmp_path)
    message = str(excinfo.value)
    assert remote.url in message
    assert remote.sha256 in message and got in message
    assert str(tmp_path / remote.filename) in message
    assert files_in(tmp_path) == []


def test_truncated_download_is_rejected(server, monkeypatch, tmp_path):
    content, _, _ = orl_like()
    remote = publish(server, monkeypatch, "orl", content)
    server.modes[remote.filename] = "truncate"

    with pytest.raises(OSError, match="Could not download") as excinfo:
        fetch_orl(data_home=tmp_path)
    assert remote.url in str(excinfo.value)
    assert files_in(tmp_path) == []


def test_stalled_download_times_out(server, monkeypatch, tmp_path):
    content, _, _ = orl_like()
    remote = publish(server, monkeypatch, "orl", content)
    server.modes[remote.filename] = "stall"
    monkeypatch.setattr(_fetchers, "_TIMEOUT", 0.1)

    with pytest.raises(OSError, match="Could not download") as excinfo:
        fetch_orl(data_home=tmp_path)
    assert remote.url in str(excinfo.value)
    assert files_in(tmp_path) == []


def test_missing_remote_file(server, monkeypatch, tmp_path):
    content, _, _ = orl_like()
    remote = publish(server, monkeypatch, "orl", content)
    del server.files[remote.filename]

    with pytest.raises(OSError, match="404") as excinfo:
        fetch_orl(data_home=tmp_path)
    message = str(excinfo.value)
    assert remote.url in message
    assert f"place it at {tmp_path / remote.filename}" in message
    assert files_in(tmp_path) == []


def test_server_down(monkeypatch, tmp_path):
    with socket.socket() as sock:  # a port that nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}/ORL_32x32.mat"
    monkeypatch.setitem(_fetchers.REMOTE_FILES, "orl", RemoteFile("ORL_32x32.mat", url, "0" * 64))

    with pytest.raises(OSError) as excinfo:
        fetch_orl(data_home=tmp_path)
    message = str(excinfo.value)
    assert url in message
    assert f"place it at {tmp_path / 'ORL_32x32.mat'}" in message
    assert files_in(tmp_path) == []


def test_download_if_missing_false(server, monkeypatch, tmp_path):
    content, _, _ = orl_like()
    remote = publish(server, monkeypatch, "orl", content)

    with pytest.raises(OSError, match="download_if_missing=False") as excinfo:
        fetch_orl(data_home=tmp_path, download_if_missing=False)
    assert str(tmp_path / remote.filename) in str(excinfo.value)
    assert server.requests == []

    # A file placed by hand is used, and verified.
    (tmp_path / remote.filename).write_bytes(content)
    assert fetch_orl(data_home=tmp_path, download_if_missing=False).data.shape == (5, 1024)
    assert server.requests == []


def test_corrupted_cache_is_reported(server, monkeypatch, tmp_path):
    content, _, _ = orl_like()
    remote = publish(server, monkeypatch, "orl", content)
    fetch_orl(data_home=tmp_path)
    cached = tmp_path / remote.filename
    corrupted = bytearray(cached.read_bytes())
    corrupted[-1] ^= 0xFF
    cached.write_bytes(bytes(corrupted))

    with pytest.raises(OSError, match="Delete it") as excinfo:
        fetch_orl(data_home=tmp_path)
    message = str(excinfo.value)
    assert str(cached) in message
    assert remote.sha256 in message and sha256(bytes(corrupted)) in message
    assert len(server.requests) == 1  # not silently downloaded again either


# -- MNIST -----------------------------------------------------------------------------

def test_fetch_mnist(server, monkeypatch, tmp_path):
    content, arrays = mnist_like()
    publish(server, monkeypatch, "mnist", content)

    bunch = fetch_mnist(data_home=tmp_path)
    images = np.concatenate([arrays["x_train"], arrays["x_test"]])
    assert bunch.data.shape == (5, 784) and bunch.data.dtype == np.float32
    assert bunch.image_shape == (28, 28)
    assert_allclose(bunch.images, images / 255.0, rtol=1e-6)
    assert_array_equal(bunch.data, bunch.images.reshape(5, -1))
    assert bunch.target.dtype == np.int64
    assert_array_equal(bunch.target, [5, 0, 9, 7, 1])

    X, y = fetch_mnist(subset="train", data_home=tmp_path, return_X_y=True)
    assert_allclose(X, arrays["x_train"].reshape(3, -1) / 255.0, rtol=1e-6)
    assert_array_equal(y, [5, 0, 9])
    X, y = fetch_mnist(subset="test", data_home=tmp_path, return_X_y=True)
    assert_allclose(X, arrays["x_test"].reshape(2, -1) / 255.0, rtol=1e-6)
    assert_array_equal(y, [7, 1])
    assert len(server.requests) == 1

    with pytest.raises(ValueError, match="subset"):
        fetch_mnist(subset="validation", data_home=tmp_path)


# -- COIL-100 --------------------------------------------------------------------------

def test_fetch_coil100_colour_native_size(server, monkeypatch, tmp_path):
    content, images = coil100_like()
    publish(server, monkeypatch, "coil100", content)

    bunch = fetch_coil100(image_size=None, color=True, data_home=tmp_path)

    expected = np.stack([images[name] for name in COIL100_SORTED]).transpose(0, 3, 1, 2)
    assert bunch.image_shape == (3, 8, 8)
    assert bunch.data.shape == (5, 3 * 64) and bunch.data.dtype == np.float32
    assert_allclose(bunch.images, expected / 255.0, rtol=1e-6)
    assert_array_equal(bunch.data, bunch.images.reshape(5, -1))
    assert_array_equal(bunch.target, [0, 0, 1, 1, 2])  # obj1, obj2, obj10
    assert_array_equal(bunch.angle, [0, 355, 0, 5, 0])


def test_fetch_coil100_grayscale_resized(server, monkeypatch, tmp_path):
    content, images = coil100_like()
    publish(server, monkeypatch, "coil100", content)

    X, y = fetch_coil100(image_size=4, data_home=tmp_path, return_X_y=True)

    # Halving with bilinear sampling at pixel centres averages 2x2 blocks.
    rgb = np.stack([images[name] for name in COIL100_SORTED]).astype(float)
    halved = np.round(rgb.reshape(5, 4, 2, 4, 2, 3).mean(axis=(2, 4)))
    gray = np.round(halved @ [0.299, 0.587, 0.114])
    assert X.shape == (5, 16) and X.dtype == np.float32
    assert_allclose(X, gray.reshape(5, 16) / 255.0, atol=1.01 / 255)
    assert_array_equal(y, [0, 0, 1, 1, 2])
    assert len(server.requests) == 1


def test_fetch_coil100_checks_image_size(tmp_path):
    for image_size in (0, 2.5, "32", True):
        with pytest.raises(ValueError, match="image_size"):
            fetch_coil100(image_size=image_size, data_home=tmp_path)


# -- the registry against the real files (when the shared data are present) ----------

def shared_file(name):
    for folder in SHARED_DATA_DIRS:
        if (folder / name).is_file():
            return folder / name
    pytest.skip(f"{name} not found in {[str(d) for d in SHARED_DATA_DIRS]}")


@pytest.mark.parametrize("fetch, dataset", [(fetch_orl, "orl"), (fetch_coil20, "coil20")])
def test_registry_matches_shared_files(fetch, dataset, tmp_path):
    remote = _fetchers.REMOTE_FILES[dataset]
    source = shared_file(remote.filename)
    assert sha256(source.read_bytes()) == remote.sha256

    shutil.copy(source, tmp_path / remote.filename)
    bunch = fetch(data_home=tmp_path, download_if_missing=False)
    X, y = load_mat(source, (32, 32))
    assert_array_equal(bunch.data, X)
    assert_array_equal(bunch.target, y)
