"""Downloads under slow networks and signals, and dataset messages that name the real cause.

Every download here comes from a real HTTP server on 127.0.0.1; one of its paths trickles
a byte at a time, as a failing mirror did.
"""

import gzip
import logging
import signal
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from conftest import QuietHandler, child_env, compose_config, dataset_source, serving, wait_for
from mnistlab import SettingError
from mnistlab.benchmark import job
from mnistlab.data import download, mnist
from mnistlab.data.mnist import FILES, MNIST_MIRRORS, ensure_files, idx
from mnistlab.data.splits import build
from mnistlab.files import PARTIAL_SUFFIX

SIZE = 100  # bytes each trickled file promises


class Handler(QuietHandler):
    """Serves a folder quietly; /trickle/<name> promises SIZE bytes and sends one per 0.1 s."""

    def do_GET(self) -> None:
        if not self.path.startswith("/trickle/"):
            return super().do_GET()
        self.send_response(200)
        self.send_header("Content-Length", str(SIZE))
        self.end_headers()
        try:
            for _ in range(SIZE):
                self.wfile.write(b"x")
                self.wfile.flush()
                time.sleep(0.1)
        except OSError:
            pass  # the client gave up: what the test wants
        self.close_connection = True


@pytest.fixture
def server(tmp_path: Path) -> Iterator[str]:
    """http://127.0.0.1:PORT: /trickle/ is slow; other paths serve tmp_path/www."""
    (tmp_path / "www").mkdir()
    with serving(Handler, tmp_path / "www") as url:
        yield url


# --- the per-file deadline, progress, and clean-up --------------------------------------------


def test_a_trickling_mirror_is_given_up_at_the_deadline(
    server: str, tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch
) -> None:
    monkeypatch.setattr(download, "PROGRESS_EVERY_S", 0.3)  # how often a slow download reports
    caplog.set_level(logging.INFO, logger="mnistlab.data.download")
    root = tmp_path / "data"
    started = time.monotonic()
    with pytest.raises(SettingError, match="no mirror served them"):
        ensure_files(root, [f"{server}/trickle/"], {}, deadline_s=1.0)
    assert time.monotonic() - started < 5  # not the 10 s the whole file would take
    assert "past the download deadline" in caplog.text
    assert f"of {SIZE} bytes after" in caplog.text  # progress, while it was slow
    assert list(root.iterdir()) == []  # no .part file left


class SlowHeaders(QuietHandler):
    """Sends a status line at once, then its headers one byte a second (for a minute)."""

    def do_GET(self) -> None:
        try:
            self.wfile.write(b"HTTP/1.1 200 OK\r\n")
            for byte in b"X-Slow: " + b"x" * 60:
                self.wfile.write(bytes([byte]))
                self.wfile.flush()
                time.sleep(1)
        except OSError:
            pass  # the client gave up: what the test wants
        self.close_connection = True


def test_the_deadline_covers_a_response_whose_headers_trickle(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="mnistlab.data.download")
    started = time.monotonic()
    with serving(SlowHeaders) as url, pytest.raises(SettingError, match="no mirror served them"):
        ensure_files(tmp_path / "data", [f"{url}/"], {}, deadline_s=2.0)
    assert time.monotonic() - started < 6  # each byte came within the read timeout
    assert "past the download deadline of 2 s" in caplog.text
    assert list((tmp_path / "data").iterdir()) == []


def test_the_deadline_is_a_dataset_setting(server: str, tmp_path: Path) -> None:
    cfg = compose_config(
        "dataset=idx",
        f"dataset.source.root={tmp_path / 'data'}",
        f"dataset.source.mirrors=[{server}/trickle/]",
        "dataset.source.download_deadline_s=0.5",
    )
    started = time.monotonic()
    with pytest.raises(SettingError, match="no mirror served them"):
        build(cfg.dataset.source)  # as a run builds it
    assert time.monotonic() - started < 5


DOWNLOAD = """
import sys
from pathlib import Path
from mnistlab.data.mnist import ensure_files
ensure_files(Path(sys.argv[1]), [sys.argv[2]], {{}})
"""


@pytest.mark.slow  # a child process
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_stopped_download_leaves_no_part_file(server: str, tmp_path: Path, signum) -> None:
    root = tmp_path / "data"
    process = subprocess.Popen(
        [sys.executable, "-c", DOWNLOAD.format(), str(root), f"{server}/trickle/"],
        env=child_env(),
        stderr=subprocess.PIPE,
        text=True,
    )
    wait_for(lambda: list(root.glob(f".*{PARTIAL_SUFFIX}")), timeout=60, process=process)
    process.send_signal(signum)
    process.communicate(timeout=30)

    # The signal still does what it does (here: stop the program), after the clean-up.
    assert process.returncode in (-signum, 128 + signum, 1)
    assert list(root.iterdir()) == []


# --- messages that name the real cause ---------------------------------------------------------


def test_missing_files_with_download_false_say_so(tmp_path: Path) -> None:
    with pytest.raises(SettingError) as error:
        mnist.mnist(**dataset_source("mnist", root=str(tmp_path), download=False))
    message = str(error.value)
    assert f"dataset files missing in {tmp_path}" in message
    assert "dataset.source.download=false, so nothing was downloaded" in message
    assert MNIST_MIRRORS[0] in message  # where `download=true` would fetch them
    assert "dataset.source.root" in message and "\n" not in message


def damaged_idx_folder(root: Path) -> None:
    """The four files of a tiny IDX dataset, the training labels cut short by one byte."""
    root.mkdir()
    images, labels = np.zeros((6, 4, 4), np.uint8), np.arange(6, dtype=np.uint8) % 2
    for name, array in zip(FILES, (images, labels, images, labels), strict=True):
        header = struct.pack(f">I{array.ndim}I", 0x0800 | array.ndim, *array.shape)
        raw = header + array.tobytes()
        (root / f"{name}.gz").write_bytes(gzip.compress(raw[:-1] if name == FILES[1] else raw))


def test_idx_without_mirrors_never_mentions_downloads_or_the_mnist_variable(
    tmp_path: Path,
) -> None:
    damaged_idx_folder(tmp_path / "damaged")
    messages = []
    for root in (tmp_path / "damaged", tmp_path / "empty"):
        with pytest.raises(SettingError) as error:
            idx(**dataset_source("idx", root=str(root), num_val_samples=1))
        messages.append(str(error.value))
    damaged, missing = messages
    assert "truncated or damaged: replace it with a good copy" in damaged
    assert "dataset files missing" in missing and "dataset.source.root" in missing
    for message in messages:
        assert "MNISTLAB_DATA" not in message and "download it again" not in message


def test_mnist_damage_with_download_false_says_how_to_download_again(tmp_path: Path) -> None:
    damaged_idx_folder(tmp_path / "damaged")
    with pytest.raises(SettingError) as error:
        mnist.mnist(
            **dataset_source(
                "mnist", root=str(tmp_path / "damaged"), download=False, checksums=False
            )
        )
    assert "delete it and set dataset.source.download=true to download it again" in str(error.value)


def test_the_benchmark_run_names_the_data_settings_it_was_given(tmp_path: Path) -> None:
    cfg = compose_config("device=cpu", "benchmark=time_to_accuracy", config_name="benchmark")
    # time_to_accuracy is a training run: its data settings are the run's own dataset.source.
    cfg.benchmark.overrides = [f"dataset.source.root={tmp_path}", "dataset.source.download=false"]
    with pytest.raises(SettingError) as error:
        job.run(cfg, tmp_path / "out")
    message = str(error.value)
    assert "dataset.source.download=false" in message and "dataset.source.root" in message
