"""Every run records where it came from (provenance.json, uncommitted.patch): the git checkout
it ran from with its uncommitted changes, or that it ran from none; versions, machine, command.
With real git repositories, real runs of the CLI and TensorBoard's own reader."""

import datetime
import json
import subprocess
from pathlib import Path

import pytest

from conftest import (
    ONE_CPU,
    TINY_RUN,
    compose_config,
    events,
    only_run,
    resume_in_process,
    run_cli,
    run_training,
)
from mnistlab import names
from mnistlab.report.jobs import Job
from mnistlab.report.provenance import provenance_section
from mnistlab.run import provenance


def git(folder: Path, *args: str) -> str:
    """A real git command in `folder`, as a user would type it; its output."""
    who = ("-c", "user.name=Test", "-c", "user.email=test@example.com")
    done = subprocess.run(["git", *who, *args], cwd=folder, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def dirty_checkout(folder: Path) -> str:
    """A git repository in `folder` with one commit, a changed file and an untracked one."""
    folder.mkdir(parents=True, exist_ok=True)
    git(folder, "init", "-q", "-b", "trial")
    (folder / "model.py").write_text("width = 64\n")
    git(folder, "add", "model.py")
    git(folder, "commit", "-q", "-m", "first")
    (folder / "model.py").write_text("width = 128\n")
    (folder / "notes.txt").write_text("not committed\n")
    return git(folder, "rev-parse", "HEAD")


def record_in(folder: Path, run: Path, monkeypatch) -> dict:
    """provenance.record for a run in `run`, started from `folder`; what it wrote."""
    monkeypatch.chdir(folder)
    run.mkdir(exist_ok=True)
    provenance.record(run, datetime.datetime.now())
    return json.loads((run / names.PROVENANCE_FILE).read_text())


def test_a_dirty_checkout_gives_its_commit_branch_patch_and_untracked_files(tmp_path, monkeypatch):
    commit = dirty_checkout(tmp_path / "code")
    found = record_in(tmp_path / "code", tmp_path / "run", monkeypatch)
    assert found["git"]["commit"] == commit and found["git"]["branch"] == "trial"
    assert found["git"]["changed"] == 1 and found["git"]["untracked"] == ["notes.txt"]
    patch = (tmp_path / "run" / names.PATCH_FILE).read_text()
    assert "-width = 64\n+width = 128\n" in patch
    assert found["git"]["patch"]["bytes"] == len(patch.encode())
    assert found["cwd"] == str(tmp_path / "code")
    assert {"python", "mnistlab", "torch", "hydra", "numpy"} <= found["versions"].keys()
    assert found["cpu"]["cores"] >= 1 and isinstance(found["cpu"]["bf16_native"], bool)


def test_outside_a_checkout_it_says_so_and_leaves_no_patch(tmp_path, monkeypatch):
    plain = tmp_path / "plain"
    plain.mkdir()
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / names.PATCH_FILE).write_text("an earlier run's\n")
    found = record_in(plain, tmp_path / "run", monkeypatch)
    assert found["git"] == {"note": names.NOT_A_CHECKOUT}
    assert not (tmp_path / "run" / names.PATCH_FILE).exists()


def test_a_clean_checkout_has_no_patch(tmp_path, monkeypatch):
    dirty_checkout(tmp_path / "code")
    git(tmp_path / "code", "commit", "-q", "-am", "second")
    found = record_in(tmp_path / "code", tmp_path / "run", monkeypatch)
    assert found["git"]["changed"] == 0 and "patch" not in found["git"]
    assert not (tmp_path / "run" / names.PATCH_FILE).exists()


def test_a_patch_over_the_limit_is_cut_at_a_line_and_said_to_be(tmp_path, monkeypatch):
    dirty_checkout(tmp_path / "code")
    (tmp_path / "code" / "model.py").write_text("".join(f"line {n}\n" for n in range(1000)))
    monkeypatch.setattr(provenance, "PATCH_LIMIT", 2000)
    found = record_in(tmp_path / "code", tmp_path / "run", monkeypatch)
    patch = (tmp_path / "run" / names.PATCH_FILE).read_bytes()
    assert len(patch) <= 2000 and patch.endswith(b"\n")
    assert found["git"]["patch"]["bytes"] > 8000
    assert found["git"]["patch"]["cut"].startswith("cut at ")


def test_without_git_the_record_says_why_and_the_rest_is_there(tmp_path, monkeypatch):
    dirty_checkout(tmp_path / "code")
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))  # no git to be found
    found = record_in(tmp_path / "code", tmp_path / "run", monkeypatch)
    assert found["git"]["note"].startswith("not found: FileNotFoundError")
    assert "torch" in found["versions"] and found["host"]


def test_the_record_replaces_a_link_and_leaves_its_target_alone(tmp_path, monkeypatch):
    dirty_checkout(tmp_path / "code")
    (tmp_path / "run").mkdir()
    target = tmp_path / "elsewhere.txt"
    target.write_text("keep me\n")
    for name in (names.PROVENANCE_FILE, names.PATCH_FILE):
        (tmp_path / "run" / name).symlink_to(target)
    record_in(tmp_path / "code", tmp_path / "run", monkeypatch)
    assert target.read_text() == "keep me\n"
    for name in (names.PROVENANCE_FILE, names.PATCH_FILE):
        assert not (tmp_path / "run" / name).is_symlink()


def text_tab(run: Path) -> str:
    """The run's provenance as TensorBoard's own reader gives it to the Text tab."""
    (text,) = events(run).Tensors(names.PROVENANCE_TAG)
    return text.tensor_proto.string_val[0].decode()


@pytest.mark.slow
def test_cli_runs_record_provenance_in_their_folder_and_text_tab(tmp_path):
    commit = dirty_checkout(tmp_path / "code")
    (tmp_path / "plain").mkdir()
    for where in ("code", "plain"):
        done = run_cli("mnistlab.cli.train", *TINY_RUN, *ONE_CPU, cwd=tmp_path / where)
        assert done.returncode == 0, done.stderr
    in_checkout, outside = only_run(tmp_path / "code"), only_run(tmp_path / "plain")
    found = json.loads((in_checkout / names.PROVENANCE_FILE).read_text())
    assert found["git"]["commit"] == commit
    assert "mnistlab.cli.train" in found["command"] and "loop.epochs=1" in found["command"]
    assert "+width = 128" in (in_checkout / names.PATCH_FILE).read_text()
    assert f"    git.commit: {commit}" in text_tab(in_checkout).splitlines()
    assert f"    git.note: {names.NOT_A_CHECKOUT}" in text_tab(outside).splitlines()
    assert not (outside / names.PATCH_FILE).exists()


def test_the_report_shows_shared_fields_once_and_differing_ones_per_job(tmp_path):
    jobs = []
    for num, host in enumerate(["node1", "<b onclick=x>node2</b>"]):
        folder = tmp_path / f"{num}_job"
        folder.mkdir()
        found = {"started": f"0{num}:00", "git": {"commit": "abc123"}, "host": host}
        (folder / names.PROVENANCE_FILE).write_text(json.dumps(found))
        jobs.append(Job(folder, num, {}, {"status": names.COMPLETED}))
    html = provenance_section(jobs)
    assert "Provenance of 2 jobs" in html and "git.commit=abc123" in html
    assert "<dt>git.commit</dt><dd>abc123</dd>" in html  # shared: once
    assert "<dt>0_job</dt><dd>host=node1</dd>" in html  # differs: a line per job
    assert "&lt;b onclick=x&gt;node2&lt;/b&gt;" in html and "<b onclick" not in html
    assert "started" not in html


@pytest.mark.slow  # two runs in this process
def test_a_resumed_run_records_its_own_beside_its_config(tmp_path, monkeypatch):
    commit = dirty_checkout(tmp_path / "code")
    monkeypatch.chdir(tmp_path / "code")
    run_training(compose_config(*TINY_RUN, *ONE_CPU), tmp_path / "run")
    first = json.loads((tmp_path / "run" / names.PROVENANCE_FILE).read_text())
    record = tmp_path / "run" / ".hydra" / "resumed_1"
    record.mkdir(parents=True)
    resume_in_process(tmp_path / "run", "loop.epochs=2", config_record=record)
    resumed = json.loads((record / names.PROVENANCE_FILE).read_text())
    assert first["git"]["commit"] == resumed["git"]["commit"] == commit
    assert (record / names.PATCH_FILE).read_text() == (
        tmp_path / "run" / names.PATCH_FILE
    ).read_text()
    assert json.loads((tmp_path / "run" / names.PROVENANCE_FILE).read_text()) == first


def test_a_process_finds_its_checkout_once_as_its_sweep_jobs_share_its_code(tmp_path, monkeypatch):
    # A sweep's jobs in one process run the code it imported for the first: later edits to the
    # checkout are not what they run, and not looked up again (a later job costs ~2 ms).
    dirty_checkout(tmp_path / "code")
    first = record_in(tmp_path / "code", tmp_path / "first", monkeypatch)
    (tmp_path / "code" / "model.py").write_text("width = 256\n")
    later = record_in(tmp_path / "code", tmp_path / "later", monkeypatch)
    assert later["git"] == first["git"]
    assert "+width = 128" in (tmp_path / "later" / names.PATCH_FILE).read_text()
