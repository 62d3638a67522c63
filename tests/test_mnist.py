"""Downloads from a local HTTP server (of IDX files the tests write), the cache, real MNIST."""

import hashlib
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import (
    QuietHandler,
    compose_config,
    dataset_source,
    events,
    free_port,
    metrics_of,
    run_cli,
    serving,
    write_idx_dataset,
)
from mnistlab import SettingError
from mnistlab.data import splits as datasets
from mnistlab.data.decoded import CACHE_FILE
from mnistlab.data.mnist import FILES, MNIST_MD5, default_root, ensure_files, idx, mnist
from mnistlab.run.training import run_training

GZ = [f"{name}.gz" for name in FILES]


class Handler(QuietHandler):
    """Serves a folder quietly; under /short/ it promises the whole file but sends half."""

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
def www(tmp_path: Path) -> Path:
    """A small IDX dataset the test writes: /good/ as written, /bad/ with corrupt labels."""
    www = tmp_path / "www"
    write_idx_dataset(www / "good", n_train=300, n_test=100)
    shutil.copytree(www / "good", www / "bad")
    labels = www / "bad" / GZ[1]
    raw = bytearray(labels.read_bytes())
    raw[30] ^= 0xFF  # one flipped byte: same size, wrong MD5
    labels.write_bytes(bytes(raw))
    return www


@pytest.fixture
def checksums(www: Path) -> dict[str, str]:
    """The MD5 of each served file, as `dataset.source.md5` takes them."""
    return {name: md5(www / "good" / name) for name in GZ}


@pytest.fixture
def server(www: Path) -> Iterator[str]:
    """http://127.0.0.1:PORT serving `www`; /short/ cuts every file of /good/ in half."""
    with serving(Handler, www) as url:
        yield url


def closed_port() -> str:
    """A URL on a port nobody listens on: the connection is refused, as when offline."""
    return f"http://127.0.0.1:{free_port()}/"


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def test_downloads_verifies_and_then_loads_from_the_cache(
    server: str, checksums: dict[str, str], tmp_path: Path
) -> None:
    root = tmp_path / "cache" / "idx"  # made on first use
    # Not the splits this process made last (another test's files, the same by their MD5s):
    # those would be handed out again without decoding, so without writing the decoded copy.
    datasets.forget()
    settings = [
        "dataset=idx",
        f"dataset.source.root={root}",
        "dataset.source.md5={" + ",".join(f"{k}:{v}" for k, v in checksums.items()) + "}",
        "dataset.source.num_val_samples=50",
        "loop.epochs=1",
        "device=cpu",
    ]
    metrics = run_training(
        compose_config(*settings, f"dataset.source.mirrors=[{server}/good/]"), tmp_path
    )
    assert sorted(p.name for p in root.iterdir()) == sorted([*GZ, CACHE_FILE])  # + decoded copy
    assert all(md5(root / name) == checksums[name] for name in GZ)
    # The second run needs no network: its only mirror refuses every connection.
    again = run_training(
        compose_config(*settings, f"dataset.source.mirrors=[{closed_port()}]"), tmp_path
    )
    assert again["test_accuracy"] == metrics["test_accuracy"] and metrics["test_accuracy"] > 0
    data = idx(**dataset_source("idx", root=str(root), num_val_samples=50))
    assert (len(data.train), len(data.val), len(data.test)) == (250, 50, 100)


def test_checksum_failure_tries_the_next_mirror(
    server: str, checksums: dict[str, str], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    root = tmp_path / "cache"
    ensure_files(root, [f"{server}/bad/", f"{server}/good"], checksums)
    assert all(md5(root / name) == checksums[name] for name in GZ)
    assert sorted(p.name for p in root.iterdir()) == sorted(GZ)  # no partial file left
    assert f"could not download {server}/bad/{GZ[1]}: MD5" in caplog.text


def test_all_mirrors_failing_is_one_clear_error_and_leaves_no_partial_file(
    server: str, checksums: dict[str, str], tmp_path: Path
) -> None:
    root = tmp_path / "cache"
    mirrors = [f"{server}/bad/", f"{server}/short/", f"{server}/absent/", closed_port()]
    with pytest.raises(SettingError) as error:
        ensure_files(root, mirrors, checksums)
    message = str(error.value)
    assert str(root) in message and all(name in message for name in FILES)
    assert f"{server}/bad/" in message  # where to get them
    # The training images came intact from the first mirror; the labels never did.
    assert [p.name for p in root.iterdir()] == [GZ[0]]


def test_a_cut_transfer_is_caught_without_a_checksum(
    server: str, www: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    root = tmp_path / "cache"
    with pytest.raises(SettingError):
        ensure_files(root, [f"{server}/short/"], {})  # no MD5 to catch it: the length does
    size = (www / "good" / GZ[0]).stat().st_size
    assert f"the connection closed after {size // 2} of {size} bytes" in caplog.text
    assert list(root.iterdir()) == []


def test_a_damaged_file_in_the_cache_is_refused(
    www: Path, checksums: dict[str, str], tmp_path: Path
) -> None:
    shutil.copytree(www / "good", tmp_path / "cache")
    (tmp_path / "cache" / GZ[3]).write_bytes((www / "good" / GZ[2]).read_bytes())  # wrong file
    with pytest.raises(SettingError, match=f"{GZ[3]} has MD5 .*, expected {checksums[GZ[3]]}"):
        idx(
            **dataset_source("idx", root=str(tmp_path / "cache"), md5=checksums, num_val_samples=10)
        )


def test_mnist_checks_the_published_checksums(www: Path) -> None:
    # Files that are not the original MNIST are refused, unless checksums are turned off.
    with pytest.raises(SettingError, match=f"has MD5 .*, expected {MNIST_MD5[GZ[0]]}"):
        mnist(**dataset_source("mnist", root=str(www / "good"), download=False, num_val_samples=10))
    data = mnist(
        **dataset_source(
            "mnist", root=str(www / "good"), download=False, checksums=False, num_val_samples=10
        )
    )
    assert (len(data.train), data.input_shape, data.num_classes) == (290, (12, 10), 3)


@pytest.mark.slow  # the real CLI
def test_offline_run_prints_one_clear_line_without_traceback(tmp_path: Path) -> None:
    result = run_cli(
        "mnistlab.cli.train",
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
    monkeypatch: pytest.MonkeyPatch, www: Path
) -> None:
    monkeypatch.setenv("MNISTLAB_DATA", str(www / "good"))
    data = mnist(
        **dataset_source(
            "mnist", download=False, checksums=False, num_val_samples=10, num_train_samples=100
        )
    )
    assert (len(data.train), len(data.val), len(data.test)) == (100, 10, 100)


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
    metrics = run_training(cfg, tmp_path)
    assert metrics["test_accuracy"] > 0.8  # the MLP after 3,000 images; chance is 0.1
    saved = metrics_of(tmp_path)
    assert saved["test_accuracy"] == metrics["test_accuracy"] and "test_loss" in saved
    assert {"test/loss", "test/accuracy"} <= set(events(tmp_path).Tags()["scalars"])
