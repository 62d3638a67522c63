"""mnistlab-diff: the settings and provenance fields that differ between two runs, nothing
else; one error line and a non-zero exit for a folder that holds no run. Real CLI runs."""

import json
from pathlib import Path

import pytest
from test_provenance import dirty_checkout

from conftest import ONE_CPU, imported_modules, only_sweep, run_cli
from mnistlab import names
from mnistlab.cli import diff


def fake_run(folder: Path, config: str, provenance: dict | None) -> Path:
    """A run folder as mnistlab-train leaves one, with what mnistlab-diff reads."""
    (folder / ".hydra").mkdir(parents=True)
    (folder / ".hydra" / "config.yaml").write_text(config)
    if provenance is not None:
        (folder / names.PROVENANCE_FILE).write_text(json.dumps(provenance))
    return folder


CONFIG = "loop:\n  epochs: {epochs}\n  seed: 0\noptimizer:\n  lr: 0.1\n"
PROVENANCE = {"started": "{started}", "git": {"commit": "abc", "branch": "main"}, "host": "h"}


def provenance(started: str, **changes) -> dict:
    """PROVENANCE with another start time and `changes` at the top level."""
    return json.loads(json.dumps(PROVENANCE).replace("{started}", started)) | changes


def test_only_the_differing_settings_and_fields_are_printed(tmp_path):
    a = fake_run(tmp_path / "a", CONFIG.format(epochs=1), provenance("09:00"))
    b = fake_run(tmp_path / "b", CONFIG.format(epochs=3), provenance("10:00", host="h2\x1b[2J"))
    done = run_cli("mnistlab.cli.diff", str(a), str(b), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        f"A: {a}",
        f"B: {b}",
        "settings (key, A, B):",
        "  loop.epochs  1  3",
        "provenance (key, A, B):",
        '  host  h  "h2\\u001b[2J"',  # a control character from disk is shown, never sent
    ]


def test_runs_that_recorded_no_provenance_are_compared_by_their_settings(tmp_path):
    a = fake_run(tmp_path / "a", CONFIG.format(epochs=1), None)
    b = fake_run(tmp_path / "b", CONFIG.format(epochs=1), provenance("10:00"))
    done = run_cli("mnistlab.cli.diff", str(a), str(b), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[2:] == [
        "settings: the same",
        f"provenance: A recorded none (no {names.PROVENANCE_FILE})",
    ]


def test_a_folder_that_is_no_run_is_one_error_line(tmp_path):
    a = fake_run(tmp_path / "a", CONFIG.format(epochs=1), None)
    done = run_cli("mnistlab.cli.diff", str(a), str(tmp_path / "missing"), cwd=tmp_path)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr == f"mnistlab-diff: {tmp_path / 'missing'} is not a folder\n"


@pytest.mark.parametrize(
    ("make", "says"),
    [
        (lambda path: path.mkdir(), "is not a run folder: it has no .hydra/config.yaml"),
        (lambda path: path.write_text("x"), "is not a folder"),
        (lambda path: fake_run(path, "- a list\n", None), "holds no settings"),
        (lambda path: fake_run(path, "a: [\n", None), "cannot be read: ParserError"),
    ],
)
def test_each_kind_of_folder_that_is_no_run_says_why(tmp_path, capsys, make, says):
    a = fake_run(tmp_path / "a", CONFIG.format(epochs=1), None)
    make(tmp_path / "other")
    with pytest.raises(SystemExit) as end:
        diff.main([str(a), str(tmp_path / "other")])
    assert end.value.code == 2
    out, err = capsys.readouterr()
    (line,) = err.splitlines()
    assert out == "" and line.startswith("mnistlab-diff: ") and says in line


def test_help_answers_without_importing_torch(tmp_path, monkeypatch):
    monkeypatch.setenv("PYTHONPROFILEIMPORTTIME", "1")
    done = run_cli("mnistlab.cli.diff", "--help", cwd=tmp_path)
    assert done.returncode == 0 and "RUN_A RUN_B" in done.stdout
    assert not {"torch", "numpy", "tensorboard"} & imported_modules(done.stderr)


@pytest.mark.slow
def test_two_jobs_of_a_sweep_differ_in_their_swept_setting_only(tmp_path):
    dirty_checkout(tmp_path)
    sweep = ("-m", "dataset=random", "loop.epochs=1,2")
    done = run_cli("mnistlab.cli.train", *sweep, *ONE_CPU, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    first, second = sorted(path.parent for path in only_sweep(tmp_path).glob("*/.hydra"))
    done = run_cli("mnistlab.cli.diff", str(first), str(second), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[2:] == [
        "settings (key, A, B):",
        "  loop.epochs  1  2",
        "provenance: the same (start times aside)",
    ]
    report = (only_sweep(tmp_path) / names.REPORT_FILE).read_text()
    assert "Provenance of 2 jobs" in report and "git.branch=trial" in report
