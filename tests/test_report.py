"""report.html: every job, seeds folded into mean ± std equal to the jobs' own metrics, plots."""

import base64
import io
import re
import shutil
import statistics
import time
from pathlib import Path

import pytest

from conftest import job_metrics, only_sweep, parse, run_cli
from mnistlab import names
from mnistlab.names import SCALARS_FILE, SWEEP_RECORD_FILE, TAGS
from mnistlab.report import groups, page, plots
from mnistlab.report.interactive import SCRIPT
from mnistlab.report.summary import cell
from mnistlab.run.scalars import History, read_scalars

TINY = (
    "dataset=fake_mnist",
    "dataset.source.num_samples=192",
    "loop.epochs=1",
    "loop.log_every_n_batches=2",
    "device.threads=1",
)


@pytest.fixture(scope="module")
def sweep(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """sgd at lr 0.01 (learns) and 1e30 (fails with NaN), two seeds each."""
    cwd = tmp_path_factory.mktemp("report")
    args = ("-m", "optimizer=sgd", "optimizer.lr=0.01,1e30", "loop.seed=0,1", *TINY)
    result = run_cli("mnistlab.cli.train", *args, cwd=cwd)
    assert result.returncode != 0  # two jobs failed, so the sweep's exit says so
    folder = only_sweep(cwd)
    assert f"report: {folder.relative_to(cwd) / 'report.html'}" in result.stdout
    assert f"tensorboard --logdir {folder.relative_to(cwd)}" in result.stdout
    return folder


def as_dicts(table: list[list[str]]) -> list[dict[str, str]]:
    header, *rows = table
    return [dict(zip(header, row, strict=True)) for row in rows]


@pytest.mark.slow  # the real 4-job sweep
def test_every_job_is_in_the_ranked_table_with_its_status_and_reason(sweep: Path) -> None:
    configurations, jobs = parse(sweep / "report.html").tables
    rows = {row["folder"]: row for row in as_dicts(jobs)}
    assert rows.keys() == job_metrics(sweep).keys()
    assert jobs[0][-1] == "reason"  # the last column, the one that wraps (CSS): a long reason
    for folder, metrics in job_metrics(sweep).items():
        assert rows[folder]["status"].split(",")[0] == metrics["status"]  # ", at chance"
        if metrics["status"] == "failed":
            assert rows[folder]["rank"] == "–"
            assert rows[folder]["reason"] == metrics["error"]
            assert "became nan" in metrics["error"]
        else:
            assert rows[folder]["val_loss"] == cell("val_loss", metrics["val_loss"])
    assert [row["rank"] for row in as_dicts(jobs)] == ["1", "2", "–", "–"]


@pytest.mark.slow  # the real 4-job sweep
def test_seeds_fold_into_mean_and_std_of_the_jobs_own_metrics(sweep: Path) -> None:
    configurations, _ = parse(sweep / "report.html").tables
    rows = {row["optimizer.lr"]: row for row in as_dicts(configurations)}
    assert rows.keys() == {"0.01", "1e+30"}  # one row per lr: the seeds are folded
    learned = [m for name, m in job_metrics(sweep).items() if "lr:0.01" in name]
    for key in ("val_loss", "val_accuracy", "train_loss"):
        values = [metrics[key] for metrics in learned]
        mean, std = statistics.fmean(values), statistics.stdev(values)
        assert rows["0.01"][key] == f"{cell(key, mean)} ± {cell(key, std)}", key
    assert (rows["0.01"]["rank"], rows["0.01"]["n"]) == ("1", "2 of 2")
    assert (rows["1e+30"]["rank"], rows["1e+30"]["n"]) == ("–", "0 of 2")
    assert rows["1e+30"]["not completed"].count("failed") == 2


@pytest.mark.slow  # the real 4-job sweep
def test_plots_are_inline_pngs_and_nothing_is_fetched(sweep: Path) -> None:
    from PIL import Image

    page = (sweep / "report.html").read_text()
    images = parse(sweep / "report.html").images
    assert len(images) == 2  # the curves, and val_loss against the learning rate
    for source in images:
        prefix = "data:image/png;base64,"
        assert source.startswith(prefix)
        picture = Image.open(io.BytesIO(base64.b64decode(source[len(prefix) :])))
        picture.load()
        assert picture.width > 300 and picture.height > 200
    # Nothing fetched: no address in any src or href (a mirror's URL among the settings is text).
    assert not re.search(r'(src|href)="(https?:|//)', page)
    assert page.count("<script>") == 1 and f"<script>{SCRIPT}</script>" in page  # ours alone
    assert page.count('<script type="application/json"') == 1  # the jobs' settings: data


def test_a_damaged_scalars_csv_loses_its_damaged_rows_only(tmp_path: Path) -> None:
    """Bytes that are no UTF-8 (a disk error, a crafted file) spoil their row, not the report."""
    rows = b"step,tag,value\n1,val/loss,0.5\n2,val/loss,0.\xff\xfe4\n3,val/\xc3(,0.25\n"
    (tmp_path / SCALARS_FILE).write_bytes(rows)
    assert read_scalars(tmp_path)["val/loss"] == ([1], [0.5])


@pytest.mark.slow  # the real 4-job sweep
def test_scalars_csv_holds_the_numbers_of_metrics_json(sweep: Path) -> None:
    for folder, metrics in job_metrics(sweep).items():
        series = read_scalars(sweep / folder)
        if metrics["status"] == "completed":
            for key in ("train_loss", "train_accuracy", "val_loss", "val_accuracy"):
                assert series[TAGS[key]][1][-1] == metrics[key], key  # the very same number
        else:  # the failed job kept its curve up to the NaN
            assert series["train/batch_loss"][0] == [2]


@pytest.mark.slow  # the real 4-job sweep
def test_summarize_compares_several_sweeps_in_one_report(sweep: Path, tmp_path: Path) -> None:
    other = tmp_path / "second_sweep"
    shutil.copytree(sweep, other)
    out = tmp_path / "both.html"
    result = run_cli(
        "mnistlab.cli.summarize", str(sweep), str(other), "--out", str(out), cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    assert f"report: {out}" in result.stdout
    tables = parse(out).tables
    compared = as_dicts(tables[0])
    assert sorted(row["sweep"] for row in compared) == sorted([sweep.name, other.name] * 2)
    assert len(tables) == 1 + 2 * 2  # the comparison, then each sweep's two tables


def test_a_diverged_curve_does_not_squash_the_others() -> None:
    bottom, top, log = plots.limits([[2.3, 1.0, 0.5], [2.3, 0.8, 0.4], [2.3, 1e6, float("nan")]])
    assert 2.3 < top < 100 and bottom < 0.4 and log  # 1e6 leaves the top; log: 0.4 to 2.3


def test_history_drops_the_points_a_resumed_run_logs_again(tmp_path: Path) -> None:
    from torch.utils.tensorboard import SummaryWriter

    first = History(SummaryWriter(str(tmp_path)), tmp_path)
    for step in (1, 2, 3):
        first.add_scalar("train/batch_loss", step / 10, step)
    first.close()
    resumed = History(SummaryWriter(str(tmp_path), purge_step=2), tmp_path, purge_step=2)
    resumed.add_scalar("train/batch_loss", 0.25, 2)
    resumed.close()
    assert read_scalars(tmp_path) == {"train/batch_loss": ([1, 2], [0.1, 0.25])}
    assert (tmp_path / SCALARS_FILE).read_text().startswith("step,tag,value\n")


@pytest.mark.slow  # the real 4-job sweep
def test_a_sweep_rebuilds_its_report_at_most_every_report_every_seconds(
    sweep: Path, tmp_path: Path
) -> None:
    # The 4-job sweep took seconds: its report was built once, at its end, not after each job.
    assert not (sweep / names.REPORT_STAMP_FILE).exists()  # refresh writes it when it builds
    folder = tmp_path / "copy"
    shutil.copytree(sweep, folder)
    report_file = folder / names.REPORT_FILE
    report_file.unlink()
    (folder / SWEEP_RECORD_FILE).touch()  # the sweep started now, and a job ends moments later
    page.refresh(folder, every=60)
    assert not report_file.exists()
    page.refresh(folder, every=0)  # sweep.report_every=0: rebuilt after the job
    built = report_file.stat().st_mtime_ns
    page.refresh(folder, every=0)  # but not again within ten build-times
    assert report_file.stat().st_mtime_ns == built
    (folder / names.REPORT_STAMP_FILE).write_text(f"{time.time() - 61} 0.01\n")  # a minute later
    page.refresh(folder, every=60)
    assert report_file.stat().st_mtime_ns != built


@pytest.mark.slow  # the real 4-job sweep
def test_a_curve_of_one_point_is_drawn_as_a_dot(sweep: Path) -> None:
    """One epoch gives one validation point per job: a line through it alone is invisible."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    loaded = groups.load_sweep(sweep, groups.SEED_KEY)
    configurations = loaded.groups()
    scalars = {job.folder: read_scalars(job.folder) for job in loaded.jobs}
    look = plots.styles(configurations, loaded.config_keys)
    figure, axes = plt.subplots()
    plots.draw_curves(axes, configurations, look, TAGS["val_loss"], scalars)
    lines = [line for line in axes.get_lines() if len(line.get_xdata()) == 1]
    assert lines and all(line.get_marker() == "o" for line in lines)
    plt.close(figure)


def test_long_y_tick_labels_and_the_y_label_stay_in_the_figure_and_apart() -> None:
    """The margins are set in inches, but grow for long tick labels (here -0.00004 + 0.97)."""
    figure, axes = plots.figure_of(15, 4, columns=3)
    for ax in axes:
        ax.plot([1, 2, 3], [0.96995, 0.97002, 0.97009])
        ax.set_ylabel("val_loss (lower is better)")
    plots.fit(figure)
    figure.canvas.draw()
    renderer = figure.canvas.get_renderer()
    assert axes[0].yaxis.get_tightbbox(renderer).x0 >= 0  # not cut off at the left
    for before, after in zip(axes, axes[1:], strict=False):
        assert before.get_tightbbox(renderer).x1 <= after.yaxis.get_tightbbox(renderer).x0
    assert axes[-1].get_tightbbox(renderer).x1 <= figure.bbox.width


def test_a_sweeps_jobs_are_parsed_once_and_read_again_when_a_file_changes(
    tmp_path, monkeypatch
) -> None:
    import json

    from mnistlab.benchmark.report_speed import make_sweep
    from mnistlab.report import jobs as jobs_module

    sweep = make_sweep(tmp_path, 6)
    parsed: list[Path] = []
    load = jobs_module.load_job
    monkeypatch.setattr(
        jobs_module, "load_job", lambda folder: parsed.append(folder) or load(folder)
    )
    first = jobs_module.find_jobs(sweep)
    assert len(parsed) == 6
    first[0].metrics["status"] = "spoilt by a caller"  # each caller gets its own dicts
    again = jobs_module.find_jobs(sweep)
    assert len(parsed) == 6 and again[0].status != "spoilt by a caller"
    changed = sweep / "3_job" / names.METRICS_FILE
    changed.write_text(json.dumps({"status": "failed", "error": "x"}))  # rewritten in place
    (sweep / "4_job" / ".hydra" / "config.yaml").write_text("objective: val_accuracy\n")
    latest = jobs_module.find_jobs(sweep)
    assert sorted(p.name for p in parsed[6:]) == ["3_job", "4_job"]
    assert latest[3].status == "failed" and latest[4].objective == "val_accuracy"


def test_a_running_sweeps_report_says_how_many_jobs_are_still_to_run(tmp_path) -> None:
    import dataclasses
    import os

    from mnistlab.benchmark.report_speed import make_sweep
    from mnistlab.files import write_json
    from mnistlab.sweep.context import IN_PROCESS, SweepContext

    sweep = make_sweep(tmp_path, 3)  # 3 of 9 jobs have run
    known = SweepContext(str(sweep), ("optimizer",), 9, time.time(), 0, os.getpid(), IN_PROCESS)
    write_json(sweep / names.SWEEP_CONTEXT_FILE, dataclasses.asdict(known))
    page.write_report([sweep], tmp_path / "running.html")
    assert (
        "3 jobs (3 completed), 6 of 9 still to run; swept"
        in (tmp_path / "running.html").read_text()
    )
    (sweep / names.SWEEP_CONTEXT_FILE).unlink()  # no context: no count to give
    page.write_report([sweep], tmp_path / "ended.html")
    assert "3 jobs (3 completed); swept" in (tmp_path / "ended.html").read_text()


@pytest.mark.parametrize(
    "metrics, diverged",
    [
        ({"status": "completed", "val_accuracy": 0.0921, "chance_accuracy": 0.1135}, True),
        ({"status": "completed", "val_accuracy": 0.2000, "chance_accuracy": 0.1135}, True),
        ({"status": "completed", "val_accuracy": 0.2210, "chance_accuracy": 0.1135}, False),
        ({"status": "completed", "val_accuracy": 0.95, "train_loss": float("nan")}, True),
        ({"status": "completed", "val_accuracy": 0.0921}, False),  # no chance recorded
        ({"status": "failed", "val_accuracy": 0.0921, "chance_accuracy": 0.1135}, False),
    ],
)
def test_a_completed_job_no_better_than_guessing_is_marked_at_chance(metrics, diverged) -> None:
    from mnistlab.report.jobs import Job

    job = Job(Path("0_job"), 0, {}, metrics)
    assert job.at_chance == diverged
    assert (job.status_text == "completed, at chance") == diverged


def test_two_swept_settings_get_a_parallel_coordinates_figure(tmp_path) -> None:
    from mnistlab.benchmark.report_speed import make_sweep
    from mnistlab.report.plots import axis_positions

    sweep = make_sweep(tmp_path, 40)  # optimizer x lr x seed: two keys once seeds fold
    page.write_report([sweep], sweep / names.REPORT_FILE)
    text = (sweep / names.REPORT_FILE).read_text()
    assert "Swept settings against the objective" in text
    assert len(parse(sweep / names.REPORT_FILE).images) == 3  # curves, val_loss vs lr, this
    # Numbers by size (log past 10x), text in the order met.
    ticks, places = axis_positions(["0.1", "0.001", "0.01", "0.1"])
    assert places == [1.0, 0.0, 0.5, 1.0] and ticks["0.01"] == 0.5
    assert axis_positions(["sgd", "adam", "sgd"])[1] == [0.0, 1.0, 0.0]
