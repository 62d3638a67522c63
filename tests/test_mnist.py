"""Real MNIST: downloads from a real HTTP server on 127.0.0.1, the cache folder, training."""

import functools
import hashlib
import json
import shutil
import socket
import threading
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from conftest import compose_config, run_cli
from mnistlab import SettingError
from mnistlab.mnist import FILES, MNIST_MD5, default_root, ensure_files, mnist
from mnistlab.run import train

GZ = [f"{name}.gz" for name in FILES]


class Handler(SimpleHTTPRequestHandler):
    """Serves a folder quietly; under /short/ it promises the whole file but sends half."""

    def log_message(self, *args) -> None:
        pass

    def do_GET(self) -> None:
        if not self.path.startswith("/short/"):
            return super().do_GET()
        body = Path(self.translate_path(self.path.replace("/short/", "/good/", 1))).read_bytes()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body[: len(body) // 2])
        self.close_connection = True


@pytest.fixture
def server(tmp_path: Path, mnist_dir: Path) -> Iterator[str]:
    """http://127.0.0.1:PORT: /good/ has the real files, /bad/ a copy with corrupt labels."""
    www = tmp_path / "www"
    (www / "good").mkdir(parents=True)
    (www / "bad").mkdir()
    for name in GZ:
        (www / "good" / name).symlink_to(mnist_dir / name)
        shutil.copyfile(mnist_dir / name, www / "bad" / name)
    labels = www / "bad" / GZ[1]
    raw = bytearray(labels.read_bytes())
    raw[100] ^= 0xFF  # one flipped byte: same size, wrong MD5
    labels.write_bytes(bytes(raw))
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=str(www)))
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def closed_port() -> str:
    """A URL on a port nobody listens on: the connection is refused, as when offline."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}/"


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def test_downloads_verifies_and_then_loads_from_the_cache(server: str, tmp_path: Path) -> None:
    root = tmp_path / "cache" / "mnist"  # made on first use
    ensure_files(root, [f"{server}/good/"], MNIST_MD5)
    assert sorted(p.name for p in root.iterdir()) == sorted(GZ)
    assert all(md5(root / name) == MNIST_MD5[name] for name in GZ)
    data = mnist(root=str(root), download=False)  # no network needed any more
    assert (len(data.train), len(data.val), len(data.test)) == (55_000, 5_000, 10_000)
    assert data.input_shape == (28, 28) and data.num_classes == 10


def test_checksum_failure_tries_the_next_mirror(
    server: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    root = tmp_path / "cache"
    ensure_files(root, [f"{server}/bad/", f"{server}/good"], MNIST_MD5)
    assert all(md5(root / name) == MNIST_MD5[name] for name in GZ)
    assert sorted(p.name for p in root.iterdir()) == sorted(GZ)  # no partial file left
    assert f"could not download {server}/bad/{GZ[1]}: MD5" in caplog.text


def test_all_mirrors_failing_is_one_clear_error_and_leaves_no_partial_file(
    server: str, tmp_path: Path
) -> None:
    root = tmp_path / "cache"
    mirrors = [f"{server}/bad/", f"{server}/short/", f"{server}/absent/", closed_port()]
    with pytest.raises(SettingError) as error:
        ensure_files(root, mirrors, MNIST_MD5)
    message = str(error.value)
    assert str(root) in message and all(name in message for name in FILES)
    assert f"{server}/bad/" in message  # where to get them
    # The training images came intact from the first mirror; the labels never did.
    assert [p.name for p in root.iterdir()] == [GZ[0]]


def test_a_cut_transfer_is_caught_without_a_checksum(
    server: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with pytest.raises(SettingError):
        ensure_files(tmp_path, [f"{server}/short/"], {})  # no MD5 to catch it: the length does
    assert "the connection closed after 4956211 of 9912422 bytes" in caplog.text
    assert list(tmp_path.iterdir()) == [tmp_path / "www"]


def test_a_damaged_file_in_the_cache_is_refused(mnist_dir: Path, tmp_path: Path) -> None:
    for name in GZ:
        (tmp_path / name).symlink_to(mnist_dir / name)
    (tmp_path / GZ[3]).unlink()
    (tmp_path / GZ[3]).write_bytes((mnist_dir / GZ[2]).read_bytes())  # the wrong file
    with pytest.raises(SettingError, match=f"{GZ[3]} has MD5 .*, expected {MNIST_MD5[GZ[3]]}"):
        mnist(root=str(tmp_path), download=False)


def test_offline_run_prints_one_clear_line_without_traceback(tmp_path: Path) -> None:
    result = run_cli(
        "mnistlab.train",
        "dataset=mnist",
        f"dataset.source.root={tmp_path / 'empty'}",
        f"dataset.source.mirrors=[{closed_port()}]",
        "device=cpu",
        cwd=tmp_path,
    )
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert f"dataset files missing in {tmp_path / 'empty'}" in result.stderr
    assert all(name in result.stderr for name in FILES)


def test_cache_folder_follows_the_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("MNISTLAB_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_root() == tmp_path / "xdg" / "mnistlab" / "mnist"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_root() == tmp_path / "home" / ".cache" / "mnistlab" / "mnist"
    monkeypatch.setenv("MNISTLAB_DATA", str(tmp_path / "mine"))
    assert default_root() == tmp_path / "mine"


def test_env_var_points_dataset_mnist_at_the_files(
    monkeypatch: pytest.MonkeyPatch, mnist_dir: Path
) -> None:
    monkeypatch.setenv("MNISTLAB_DATA", str(mnist_dir))
    data = mnist(download=False, num_train_samples=100)
    assert (len(data.train), len(data.val), len(data.test)) == (100, 5_000, 10_000)


@pytest.mark.parametrize("mode", ["tensor", "dataloader"])
def test_training_on_real_mnist_reports_test_metrics(
    mnist_dir: Path, tmp_path: Path, mode: str
) -> None:
    cfg = compose_config(
        "dataset=mnist",
        f"dataset.source.root={mnist_dir}",
        "dataset.source.download=false",
        "dataset.source.num_train_samples=3000",
        f"dataset.loader.mode={mode}",
        "loop.epochs=1",
        "device=cpu",
    )
    metrics = train(cfg, tmp_path)
    assert metrics["test_accuracy"] > 0.8  # the MLP after 3,000 images; chance is 0.1
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["test_accuracy"] == metrics["test_accuracy"] and "test_loss" in saved
    events = EventAccumulator(str(tmp_path))
    events.Reload()
    assert {"test/loss", "test/accuracy"} <= set(events.Tags()["scalars"])
