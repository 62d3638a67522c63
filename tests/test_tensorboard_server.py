"""TensorBoard itself, started on a sweep folder, lists every job with its hparams and scalars.

The sweep has a job that fails (lr 1e30 makes the loss NaN): TensorBoard must show it as a
failure, with its error text and the curve it logged, beside the jobs that completed.
"""

import json
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from conftest import SMALL_DIGITS, free_port, job_metrics, only_sweep, run_cli
from mnistlab.names import BATCH_TAGS, TAGS

pytestmark = pytest.mark.slow  # a sweep, then a TensorBoard server

SMALL = (*SMALL_DIGITS, "loop.log_every_n_batches=5", "device.threads=1")
# Every tag a run that completes logs; each is a metric of HParams, present in every session.
METRICS = {tag for key, tag in TAGS.items() if not key.startswith("test")}
ALL_TAGS = METRICS | set(BATCH_TAGS.values())
STATUSES = ["STATUS_UNKNOWN", "STATUS_SUCCESS", "STATUS_FAILURE", "STATUS_RUNNING"]


@pytest.fixture(scope="module")
def sweep(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """sgd and adam at lr 0.01 (complete) and at 1e30 (fail), logging every 5 batches."""
    cwd = tmp_path_factory.mktemp("tensorboard")
    jobs = "optimizer=sgd,adam", "optimizer.lr=0.01,1e30"
    result = run_cli("mnistlab.cli.train", "-m", *jobs, *SMALL, cwd=cwd)
    assert "2 completed, 2 failed" in result.stdout, result.stderr
    return only_sweep(cwd)


@pytest.fixture(scope="module")
def server(sweep: Path) -> Iterator[str]:
    """`tensorboard --logdir <sweep>` on a free local port; its URL. Always stopped afterwards."""
    with serving(sweep) as url:
        yield url


@contextmanager
def serving(sweep: Path) -> Iterator[str]:
    """TensorBoard on `sweep`, as `server` has it, for the block."""
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


def test_every_job_is_a_run_named_by_what_differs(server: str, sweep: Path) -> None:
    runs = eventually(lambda: get(server, "/data/runs"), lambda runs: len(runs) >= 5)
    # "." is the sweep folder itself: it holds the HParams experiment and no scalar.
    assert "." in runs and "." not in get(server, "/data/plugin/scalars/tags")
    runs.remove(".")
    assert sorted(runs) == sorted(job_metrics(sweep))
    assert sorted(name.split("_", 1)[1] for name in runs) == [
        "adam+lr:0.01",
        "adam+lr:1e30",
        "sgd+lr:0.01",
        "sgd+lr:1e30",
    ]


def test_hparams_lists_every_job_with_typed_settings_status_and_final_metrics(
    server: str, sweep: Path
) -> None:
    # The sweep's end wrote the experiment from the runs' own sessions: the objective first.
    experiment = post(server, "/data/plugin/hparams/experiment", {"experimentName": ""})
    assert experiment["metricInfos"][0]["name"]["tag"] == TAGS["val_loss"]
    differ = [info["name"] for info in experiment["hparamInfos"] if info.get("differs")]
    assert sorted(differ) == ["optimizer", "optimizer.lr"]
    types = {info["name"]: info["type"] for info in experiment["hparamInfos"]}
    assert types["optimizer"] == "DATA_TYPE_STRING"
    for name in ("optimizer.lr", "parameters", "world_size"):
        assert types[name] == "DATA_TYPE_FLOAT64", name
    assert types["loop.fast_optimizer"] == types["dataset.loader.shuffle"] == "DATA_TYPE_BOOL"
    assert types["device"] == "DATA_TYPE_STRING"
    metrics = {info["name"]["tag"] for info in experiment["metricInfos"]}
    assert metrics == ALL_TAGS

    groups = eventually(
        lambda: session_groups(server), lambda groups: len(groups) == len(job_metrics(sweep))
    )
    # Each named by its folder, then its sweep's: `--logdir outputs` still reads the job first.
    assert groups.keys() == {f"{name} ({sweep.name})" for name in job_metrics(sweep)}
    for name, saved in job_metrics(sweep).items():
        name = f"{name} ({sweep.name})"
        (session,) = groups[name]["sessions"]
        hparams = groups[name]["hparams"]
        assert hparams["optimizer"] == ("SGD" if "sgd" in name else "Adam")
        assert hparams["optimizer.lr"] == (0.01 if "lr:0.01" in name else 1e30)
        assert hparams["loop.fast_optimizer"] is True
        assert hparams["world_size"] == 1
        final = {value["name"]["tag"]: value["value"] for value in groups[name]["metricValues"]}
        if saved["status"] == "failed":
            assert session["status"] == "STATUS_FAILURE"
            continue
        assert session["status"] == "STATUS_SUCCESS"
        # Every metric of the experiment: parallel coordinates and scatter plots draw it.
        assert final.keys() == ALL_TAGS
        for key, tag in TAGS.items():
            if key in saved:
                assert final[tag] == pytest.approx(saved[key], rel=1e-6), key


def test_scalars_of_every_run(server: str, sweep: Path) -> None:
    tags = eventually(
        lambda: get(server, "/data/plugin/scalars/tags"),
        lambda tags: len(tags) == len(job_metrics(sweep)),
    )
    for name, saved in job_metrics(sweep).items():
        train = get(server, "/data/plugin/scalars/scalars", run=name, tag="train/batch_loss")
        if saved["status"] == "failed":  # the curve it logged before it stopped
            assert [(step, value) for _, step, value in train] == [(5, "NaN")]  # TB's JSON
            continue
        assert set(tags[name]) == ALL_TAGS
        # Every 5 batches, and the epoch's last, partial window.
        assert [step for _, step, _ in train] == [5, 10, 15, 20, 25, saved["steps"]]
        (val,) = get(server, "/data/plugin/scalars/scalars", run=name, tag="val/loss")
        assert val[1:] == [saved["steps"], pytest.approx(saved["val_loss"], rel=1e-6)]


def test_failed_jobs_carry_their_error_and_completed_ones_their_mistakes(
    server: str, sweep: Path
) -> None:
    texts = eventually(lambda: get(server, "/data/plugin/text/tags"), lambda t: len(t) == 4)
    images = get(server, "/data/plugin/images/tags")
    for name, saved in job_metrics(sweep).items():
        assert "config" in texts[name]
        if saved["status"] == "failed":
            (error,) = get(server, "/data/plugin/text/text", run=name, tag="error")
            assert "became nan" in error["text"] and "optimizer.lr=1e+30" in error["text"]
            assert name not in images
        else:
            assert {"val/confusion_matrix", "val/misclassified"} <= set(images[name])
            assert {"val/confusion_counts", "val/misclassified_labels"} <= set(texts[name])


def test_a_job_that_failed_before_training_is_a_failure_session_with_its_error(tmp_path):
    # Too big a batch for its 10 samples: refused in the job, before it wrote any event.
    jobs = ("dataset=random", "device=cpu", "dataset.loader.batch_size=4,100000")
    result = run_cli("mnistlab.cli.train", "-m", *jobs, cwd=tmp_path)
    assert "1 completed, 1 failed" in result.stdout, result.stderr
    sweep = only_sweep(tmp_path)
    with serving(sweep) as url:
        groups = eventually(lambda: session_groups(url), lambda groups: len(groups) == 2)
        failed = next(name for name in groups if "100000" in name)
        (session,) = groups[failed]["sessions"]
        assert session["status"] == "STATUS_FAILURE"
        assert groups[failed]["hparams"]["dataset.loader.batch_size"] == 100000
        assert failed == f"1_batch_size:100000 ({sweep.name})"
        texts = get(url, "/data/plugin/text/text", run=session["name"], tag="error")
        assert "is more than the 10 training samples" in texts[0]["text"]
