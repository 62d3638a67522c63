"""TensorBoard itself, started on a sweep folder, lists every job with its hparams and scalars."""

import json
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import run_cli

pytestmark = pytest.mark.slow  # a sweep, then a TensorBoard server

SMALL = ("loop.epochs=1", "dataset.source.num_samples=2000", "loop.log_every_n_batches=5")
TAGS = {"train/loss", "val/loss", "val/accuracy"}
STATUSES = ["STATUS_UNKNOWN", "STATUS_SUCCESS", "STATUS_FAILURE", "STATUS_RUNNING"]


@pytest.fixture(scope="module")
def sweep(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-job sweep (sgd, adam) whose runs log train/loss every 5 batches."""
    cwd = tmp_path_factory.mktemp("tensorboard")
    result = run_cli("mnistlab.train", "-m", "optimizer=sgd,adam", *SMALL, cwd=cwd)
    assert result.returncode == 0, result.stderr
    (folder,) = (cwd / "outputs" / "sweeps").iterdir()
    return folder


@pytest.fixture(scope="module")
def server(sweep: Path) -> Iterator[str]:
    """`tensorboard --logdir <sweep>` on a free local port; its URL. Always stopped afterwards."""
    port = free_port()
    tensorboard = Path(sys.executable).parent / "tensorboard"
    command = [str(tensorboard), "--logdir", str(sweep), "--host", "127.0.0.1", "--port", str(port)]
    log = (sweep.parent / "tensorboard.log").open("w")
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_until_serving(url, process, sweep.parent / "tensorboard.log")
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:  # terminate was ignored: do not leave it running
            process.kill()
            process.wait()
        log.close()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_until_serving(url: str, process: subprocess.Popen, log: Path) -> None:
    """Poll until TensorBoard answers; fail with its output if it exits or takes over 60 s."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"tensorboard exited with {process.returncode}:\n{log.read_text()}")
        try:
            get(url, "/data/runs")
            return
        except OSError:  # not listening yet (URLError and ConnectionError are OSErrors)
            time.sleep(0.3)
    pytest.fail(f"tensorboard did not answer within 60 s:\n{log.read_text()}")


def get(url: str, path: str, **query: str) -> Any:
    address = f"{url}{path}?{urllib.parse.urlencode(query)}" if query else url + path
    with urllib.request.urlopen(address, timeout=10) as response:
        return json.load(response)


def post(url: str, path: str, body: dict) -> Any:
    """The hparams plugin's API takes JSON POSTs; TensorBoard wants the XSRF header on them."""
    request = urllib.request.Request(
        url + path,
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json", "X-XSRF-Protected": "1"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.load(response)


def eventually(fetch, ready, timeout: float = 60) -> Any:
    """TensorBoard loads event files in the background: retry `fetch` until `ready(answer)`."""
    deadline = time.monotonic() + timeout
    answer = fetch()
    while not ready(answer) and time.monotonic() < deadline:
        time.sleep(0.5)
        answer = fetch()
    return answer


def session_groups(url: str) -> dict[str, dict]:
    body = {
        "experimentName": "",
        "allowedStatuses": STATUSES,
        "colParams": [],
        "startIndex": 0,
        "sliceSize": 100,
    }
    answer = post(url, "/data/plugin/hparams/session_groups", body)
    return {group["name"]: group for group in answer.get("sessionGroups", [])}


def jobs(sweep: Path) -> dict[str, dict]:
    """Job folder name -> its metrics.json."""
    return {
        metrics.parent.name: json.loads(metrics.read_text())
        for metrics in sweep.glob("*/metrics.json")
    }


def test_every_job_is_a_run(server: str, sweep: Path) -> None:
    runs = eventually(lambda: get(server, "/data/runs"), lambda runs: len(runs) >= 2)
    assert sorted(runs) == sorted(jobs(sweep))


def test_hparams_tab_lists_every_job_with_its_hparams_and_final_metrics(
    server: str, sweep: Path
) -> None:
    # No run writes an experiment summary: the plugin builds it from the runs' own sessions.
    experiment = post(server, "/data/plugin/hparams/experiment", {"experimentName": ""})
    assert {"optimizer", "optimizer.lr", "dataset.loader.batch_size", "model.hidden"} <= {
        info["name"] for info in experiment["hparamInfos"]
    }
    assert {info["name"]["tag"] for info in experiment["metricInfos"]} == TAGS

    groups = eventually(
        lambda: session_groups(server), lambda groups: len(groups) == len(jobs(sweep))
    )
    assert groups.keys() == jobs(sweep).keys()
    for name, metrics in jobs(sweep).items():
        hparams = groups[name]["hparams"]
        assert hparams["optimizer"] == ("SGD" if "optimizer=sgd" in name else "Adam")
        assert hparams["optimizer.lr"] == (0.01 if "optimizer=sgd" in name else 0.001)
        final = {value["name"]["tag"]: value["value"] for value in groups[name]["metricValues"]}
        assert final["val/loss"] == pytest.approx(metrics["val_loss"], rel=1e-6)
        assert final["val/accuracy"] == pytest.approx(metrics["val_accuracy"], rel=1e-6)


def test_scalars_of_every_run(server: str, sweep: Path) -> None:
    tags = eventually(
        lambda: get(server, "/data/plugin/scalars/tags"),
        lambda tags: len(tags) == len(jobs(sweep)),
    )
    for name, metrics in jobs(sweep).items():
        assert set(tags[name]) == TAGS
        train = get(server, "/data/plugin/scalars/scalars", run=name, tag="train/loss")
        assert [step for _, step, _ in train] == list(range(5, metrics["steps"] + 1, 5))
        (val,) = get(server, "/data/plugin/scalars/scalars", run=name, tag="val/loss")
        assert val[1:] == [metrics["steps"], pytest.approx(metrics["val_loss"], rel=1e-6)]
