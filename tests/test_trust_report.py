"""A crafted sweep folder cannot put markup in report.html, nor stop mnistlab-summarize.

Every field a job folder gives (status, objective, override keys and values, folder names,
metric names, error texts) holds a payload; the page is parsed (html.parser) and loaded in
headless Chromium, and neither finds an element, attribute or script of the payload's. Damaged
folders (FIFOs, links out, 100,000 brackets, alias bombs, 1e300, 400-digit numbers, `$x$`)
each become one line naming the file and why, or a value shown as it is: never a traceback,
never a hang.
"""

import csv
import html
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
from html.parser import HTMLParser
from pathlib import Path

import pytest
import yaml

from conftest import child_env, run_cli
from mnistlab.names import read_metrics
from mnistlab.report import groups, jobs, markup, page
from mnistlab.report.summary import cell

IMG = "<img src=x onerror=\"document.title='pwned'\">"
SCRIPT = "<script>document.title='pwned'</script>"
BREAKOUT = "\"'><svg onload=\"document.title='pwned'\">"  # ends a quoted attribute first
CLOSES = "</title></style><script>document.title='pwned'</script>"
PAYLOADS = (IMG, SCRIPT, BREAKOUT, CLOSES)

# What report.html may hold: our elements, and on them only our attributes.
OUR_TAGS = {
    "html", "head", "meta", "title", "style", "body", "h1", "h2", "h3", "p", "b", "code",
    "table", "thead", "tbody", "tr", "th", "td", "img", "ul", "li", "details", "summary",
    "dl", "dt", "dd", "a", "input", "script",
}  # fmt: skip
OUR_ATTRIBUTES = {
    "meta": {"charset", "http-equiv", "content"},
    "tr": {"class"},
    "img": {"alt", "src"},
    "table": {"class", "id", "data-settings"},
    "a": {"href"},
    "input": {"class", "type", "placeholder", "data-table", "data-job"},
    "script": {"type", "id"},  # the settings' JSON (data, not run); ours has none
    "p": {"id"},
    "th": {"title"},  # set by the page's own script: "click to sort"
}


def craft_job(
    sweep: Path, name: str, num: int, task: list[str], objective: object, metrics: object
) -> Path:
    """A job folder as Hydra and mnistlab-train leave it, holding the given values."""
    folder = sweep / name
    (folder / ".hydra").mkdir(parents=True)
    hydra = {
        "job": {"num": num, "config": {"override_dirname": {"exclude_keys": ["hydra.launcher"]}}},
        "overrides": {"task": task},
    }
    (folder / ".hydra" / "hydra.yaml").write_text(yaml.safe_dump({"hydra": hydra}))
    (folder / ".hydra" / "config.yaml").write_text(yaml.safe_dump({"objective": objective}))
    if metrics is not None:
        (folder / "metrics.json").write_text(json.dumps(metrics))
    return folder


def crafted_sweep(folder: Path, payload: str) -> str:
    """A sweep whose every field holds `payload`: status, objective (so a metric's name too),
    override keys and values, folder names, errors, prune reasons, the device. Returns the
    swept key it crafted (the payload up to its first `=`, where an override's key ends)."""
    name = payload.replace("/", "|")  # a folder name cannot hold a slash
    key = payload.split("=", 1)[0]
    everywhere = {
        "status": payload,
        "val_loss": 0.5,
        payload: 0.25,  # the metric the objective names
        "error": payload,
        "prune_reason": payload,
        "pruned_at_epoch": payload,
        "device": payload,
    }
    craft_job(folder, f"0_{name}", 0, [f"{key}=a", f"k={payload}"], payload, everywhere)
    done = {"status": "completed", payload: 0.5, "val_loss": 0.5, "device": payload}
    craft_job(folder, f"1_{name}", 1, [f"{key}=b", "k=1"], payload, done)
    pruned = {
        "status": "pruned",
        payload: 0.75,
        "pruned_at_epoch": payload,
        "prune_reason": payload,
    }
    craft_job(folder, "2_pruned", 2, [f"{key}=b", "k=2"], payload, pruned)
    craft_job(folder, "3_failed", 3, [f"{key}=c", "k=3"], payload, {"status": "failed"})
    return key


class Elements(HTMLParser):
    """Every element and attribute of a page, and its text."""

    def __init__(self) -> None:
        super().__init__()
        self.elements: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list) -> None:
        self.elements.append((tag, dict(attrs)))

    def handle_startendtag(self, tag: str, attrs: list) -> None:
        self.elements.append((tag, dict(attrs)))

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def assert_only_our_markup(page: str) -> str:
    """Fail on any element or attribute that is not ours; return the page's text."""
    parsed = Elements()
    parsed.feed(page)
    parsed.close()
    for tag, attributes in parsed.elements:
        assert tag in OUR_TAGS, (tag, attributes)
        assert set(attributes) <= OUR_ATTRIBUTES.get(tag, set()), (tag, attributes)
        if tag == "img":
            assert attributes["src"].startswith("data:image/png;base64,"), attributes
    return "".join(parsed.text)


@pytest.mark.slow  # mnistlab-summarize, twice
def test_every_field_of_a_crafted_sweep_is_text_in_the_report(tmp_path: Path) -> None:
    sweeps = [tmp_path / f"s{n} {payload.replace('/', '|')}" for n, payload in enumerate(PAYLOADS)]
    keys = [crafted_sweep(sweep, payload) for sweep, payload in zip(sweeps, PAYLOADS, strict=True)]
    alone = run_cli("mnistlab.cli.summarize", str(sweeps[0]), "--group-over", keys[0], cwd=tmp_path)
    assert alone.returncode == 0, alone.stderr
    text = assert_only_our_markup((sweeps[0] / "report.html").read_text())
    assert IMG in text and f"mean ± std over {keys[0]}" in text  # shown as text, not dropped
    compared = tmp_path / "compared.html"  # each sweep's section, and "All sweeps, ranked by"
    both = run_cli("mnistlab.cli.summarize", *map(str, sweeps), f"--out={compared}", cwd=tmp_path)
    assert both.returncode == 0, both.stderr
    text = assert_only_our_markup(compared.read_text())
    for sweep, payload in zip(sweeps, PAYLOADS, strict=True):
        assert f"ranked by {payload}" in text and f"1 {payload}" in text  # objective, counts
        # summary.md is Markdown: where it is shown as a page, a `<` would start HTML.
        summary = (sweep / "summary.md").read_text()
        assert payload.replace("<", "\\<") in summary and not re.search(r"(?<!\\)<", summary)


def test_a_value_never_reaches_the_page_as_markup() -> None:
    built = markup.tag("tr", markup.tag("td", IMG, markup.tag("b", BREAKOUT)), class_=BREAKOUT)
    assert assert_only_our_markup(f"<table>{built}</table>") == IMG + BREAKOUT
    with pytest.raises(ValueError, match="not an attribute we write"):
        markup.tag("img", onerror="x")
    with pytest.raises(ValueError, match="src takes a URL we made"):
        markup.tag("img", src="javascript:alert(1)")
    assert markup.printable("ok\x1b]0;title\x07\u202eevil\udcff") == (
        "ok\\u001b]0;title\\u0007\\u202eevil\\udcff"
    )


def chromium() -> str:
    """The headless browser; the test skips without one unless MNISTLAB_BROWSER_REQUIRED=1."""
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        if os.environ.get("MNISTLAB_BROWSER_REQUIRED") == "1":
            pytest.fail("chromium not found (apt-get install -y chromium)")
        pytest.skip("chromium not found: apt-get install -y chromium")
    return found


@pytest.mark.slow  # mnistlab-summarize and a browser
def test_no_payload_runs_when_the_report_is_opened_in_a_browser(tmp_path: Path) -> None:
    browser = chromium()
    sweep = tmp_path / "sweep"
    for num, payload in enumerate(PAYLOADS):
        crafted_sweep(sweep / "part", payload)
        for job in (sweep / "part").iterdir():  # all payloads in one sweep: renumbered
            job.rename(sweep / f"{num}{job.name}")
        (sweep / "part").rmdir()
    result = run_cli("mnistlab.cli.summarize", str(sweep), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    shown = subprocess.run(
        [
            browser,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            f"--user-data-dir={tmp_path / 'profile'}",
            "--virtual-time-budget=3000",  # time for an image's onerror to fire
            "--dump-dom",
            (sweep / "report.html").as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert shown.returncode == 0, shown.stderr[-2000:]
    dom = shown.stdout
    assert "<title>Sweep report: sweep</title>" in dom
    assert "pwned" not in re.search(r"<title>(.*?)</title>", dom, re.S).group(1)
    text = assert_only_our_markup(dom)  # the page as the browser built it, scripts run
    assert all(payload in text for payload in (IMG, SCRIPT))


# --- damaged job folders: one line each, never a traceback or a hang --------------------------

GOOD = {"status": "completed", "val_loss": 0.5}
BOMB = ['a0: &a0 ["x", "x", "x", "x", "x", "x", "x", "x", "x", "x"]'] + [
    f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 20)
]  # 10**20 strings, were a reader to walk it


def overwrite(folder: Path, name: str, text: str) -> None:
    (folder / name).unlink(missing_ok=True)
    (folder / name).write_text(text)


def damaged_sweep(sweep: Path, outside: Path) -> dict[str, str]:
    """A good job and one job per kind of damage; folder name -> the line its row must give."""
    job = lambda num, name, metrics=GOOD, value="0.1": craft_job(  # noqa: E731
        sweep, f"{num}_{name}", num, [f"optimizer.lr={value}"], "val_loss", metrics
    )
    job(0, "good")
    os.mkfifo(job(1, "fifo", None) / "metrics.json")
    fifo = job(2, "fifo_config")
    (fifo / ".hydra" / "config.yaml").unlink()
    os.mkfifo(fifo / ".hydra" / "config.yaml")
    outside.write_text(json.dumps({"status": "completed", "val_loss": 0.01, "error": "SECRET"}))
    (job(3, "link_out", None) / "metrics.json").symlink_to(outside)
    (job(4, "folder", None) / "metrics.json").mkdir()
    job(5, "list_status", {"status": ["x"], "val_loss": 0.3})
    job(6, "nested_json", None).joinpath("metrics.json").write_text("[" * 100_000)
    overwrite(job(7, "nested_yaml") / ".hydra", "config.yaml", "objective: " + "[" * 100_000)
    overwrite(job(8, "aliases") / ".hydra", "config.yaml", "\n".join(BOMB) + "\nobjective: x\n")
    big = job(9, "big", None) / "metrics.json"
    big.write_text('{"pad": "' + "x" * (11 * 2**20) + '"}')
    (job(10, "digits", None) / "metrics.json").write_text(
        '{"status": "x", "n": ' + "9" * 5000 + "}"
    )
    shutil.rmtree(job(11, "hydra_link") / ".hydra")
    (sweep / "11_hydra_link" / ".hydra").symlink_to(sweep / "0_good" / ".hydra")
    elsewhere = shutil.copytree(sweep / "0_good", outside.with_name("elsewhere"))
    os.mkfifo(elsewhere / "scalars.csv")  # were anything read through the link, it would say so
    (sweep / "12_job_link").symlink_to(elsewhere)
    return {
        "1_fifo": "unreadable: metrics.json: it is a FIFO: not read",
        "2_fifo_config": "unreadable: .hydra/config.yaml: it is a FIFO: not read",
        "3_link_out": "unreadable: metrics.json: it is a link: not read",
        "4_folder": "unreadable: metrics.json: it is a folder: not read",
        "5_list_status": "unreadable: metrics.json: status must be text, not list",
        "6_nested_json": "unreadable: metrics.json: it is nested too deeply to be a run's figures",
        "7_nested_yaml": "unreadable: .hydra/config.yaml: ScannerError: while increasing flow "
        "level",
        "8_aliases": "unreadable: .hydra/config.yaml: it uses YAML anchors or aliases (&name, "
        "*name), which we never write",
        "9_big": "unreadable: metrics.json: it is over 10.0 MB: mnistlab writes less",
        "10_digits": "unreadable: metrics.json: it holds a number of over 4300 digits: not a "
        "run's figure",
        "11_hydra_link": "unreadable: .hydra/hydra.yaml: .hydra is a link: not read",
        "12_job_link": "unreadable: the job folder is a link: not read",
    }


def summary_rows(sweep: Path) -> dict[str, dict[str, str]]:
    with (sweep / "summary.csv").open(newline="") as file:
        return {row["folder"]: row for row in csv.DictReader(file)}


@pytest.mark.slow  # mnistlab-summarize
def test_summarize_lists_each_damaged_job_in_one_line_and_ranks_the_rest(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    expected = damaged_sweep(sweep, tmp_path / "outside.json")
    result = run_cli("mnistlab.cli.summarize", str(sweep), cwd=tmp_path, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    rows = summary_rows(sweep)
    assert {name: row["error"] for name, row in rows.items() if name != "0_good"} == expected
    assert (rows["0_good"]["status"], rows["0_good"]["val_loss"]) == ("completed", "0.5")
    assert "SECRET" not in (sweep / "report.html").read_text() + result.stdout
    assert "12_job_link" not in result.stderr  # nothing read through a linked job folder
    assert (sweep / "report.html").stat().st_size > 10_000  # with its plots


@pytest.mark.slow  # mnistlab-summarize
def test_odd_values_are_shown_as_they_are(tmp_path: Path) -> None:
    """`$` pairs (matplotlib's math), 100,000 brackets, 1e300, inf, nan, -0, 400 digits."""
    sweep = tmp_path / "s_$x^^$ ${oc.env:HOME}"
    values = {
        "0_a$b$c": ("a$b^^c$d", {"val_loss": 1e300, "val_accuracy": 1e300}),
        "1_${oc.env:HOME}": ("${oc.env:HOME}", {"val_loss": -0.0, "samples_per_second": 10**400}),
        "2_brackets": ("[" * 100_000, {"val_loss": 0.5}),
        "3_$\\frac$": ("$\\frac$", {"val_loss": 0.25, "val_accuracy": 0.5}),
    }
    for num, (name, (value, metrics)) in enumerate(values.items()):
        task = [f"optimizer.lr={value}", f"k$\\x$={num}"]
        craft_job(sweep, name, num, task, "val_loss", {"status": "completed", **metrics})
    nonfinite = craft_job(sweep, "4_nonfinite", 4, ["optimizer.lr=1", "k$\\x$=4"], "val_loss", {})
    (nonfinite / "metrics.json").write_text(
        '{"status": "completed", "val_loss": NaN, "test_loss": Infinity, "train_loss": 1e999}'
    )
    for name, last in (("0_a$b$c", "-1e308"), ("3_$\\frac$", "1e308")):  # beyond any axis
        (sweep / name / "scalars.csv").write_text(
            f"step,tag,value\n1,val/loss,1e308\n2,val/loss,{last}\n1,train/batch_loss,1e308\n"
        )
    (sweep / "2_brackets" / "scalars.csv").write_text("step,tag,value\n1,val/loss," + "x" * 200_000)
    result = run_cli("mnistlab.cli.summarize", str(sweep), cwd=tmp_path, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    assert "scalars.csv" not in result.stderr  # the over-long row is skipped, the rest read
    table = (sweep / "summary.md").read_text()
    assert "| 1e+300 | 1e+302% |" in table and "| 1.000e+400 |" in table
    assert "| -0.0000 |" in table and "| nan |" in table and "| inf |" in table
    assert "[" * 999 + "…" in table and "[" * 1000 not in table  # a cell, not a page
    assert summary_rows(sweep)["2_brackets"]["optimizer.lr"] == "[" * 100_000  # CSV: all of it
    page = assert_only_our_markup((sweep / "report.html").read_text())
    assert "a$b^^c$d" in page and "${oc.env:HOME}" in page


@pytest.mark.slow  # mnistlab-summarize, as a user who may not read
def test_unreadable_files_are_one_line_each_and_nothing_readable_is_an_error() -> None:
    base = Path(tempfile.mkdtemp(prefix="mnistlab-unreadable-"))  # open to `nobody`
    try:
        sweep = base / "sweep"
        craft_job(sweep, "0_good", 0, ["optimizer.lr=0.1"], "val_loss", GOOD)
        (craft_job(sweep, "1_metrics", 1, ["optimizer.lr=0.2"], "val_loss", GOOD)).joinpath(
            "metrics.json"
        ).chmod(0)
        craft_job(sweep, "2_config", 2, ["optimizer.lr=0.3"], "val_loss", GOOD)
        (sweep / "2_config" / ".hydra" / "config.yaml").chmod(0)
        craft_job(sweep, "3_locked", 3, ["optimizer.lr=0.4"], "val_loss", GOOD).chmod(0)
        for path in [base, sweep, *sweep.glob("*"), *sweep.glob("*/.hydra")]:
            if path.name != "3_locked":
                path.chmod(0o755)
        result = subprocess.run(
            as_nobody("mnistlab.cli.summarize", str(sweep), "--out", str(base / "r.html")),
            env=child_env(),
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode == 0, result.stderr
        assert "Traceback" not in result.stderr
        lines = [line for line in result.stdout.splitlines() if "unreadable:" in line]
        assert len(lines) == 3
        assert (
            "| unreadable: metrics.json: PermissionError: [Errno 13] Permission denied"
            in (lines[0])
        )
        assert "| unreadable: .hydra/config.yaml: PermissionError: [Errno 13]" in lines[1]
        assert "| unreadable: .hydra/hydra.yaml: PermissionError: [Errno 13]" in lines[2]
        shutil.rmtree(sweep / "0_good")  # now no job can be read
        nothing = subprocess.run(
            as_nobody("mnistlab.cli.summarize", str(sweep), "--out", str(base / "r.html")),
            env=child_env(),
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert nothing.returncode == 1
        assert nothing.stderr.strip().splitlines()[-1] == (
            "mnistlab-summarize: no job folder could be read: the table gives each reason"
        )
        sweep.chmod(0o311)  # may be entered, not listed
        unlisted = subprocess.run(
            as_nobody("mnistlab.cli.summarize", str(sweep)),
            env=child_env(),
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert unlisted.returncode == 2
        assert unlisted.stderr.splitlines()[-1] == (
            f"mnistlab-summarize: error: {sweep} cannot be read: Permission denied"
        )
    finally:
        for path in [base, *base.rglob("*")]:
            if not path.is_symlink():
                path.chmod(0o755)
        shutil.rmtree(base)


def as_nobody(module: str, *args: str) -> list[str]:
    """The command `python -m module args`; run as `nobody` where we are root (who reads all)."""
    command = [sys.executable, "-m", module, *args]
    if os.geteuid() != 0:
        return command
    if shutil.which("setpriv") is None:
        pytest.skip("running as root without setpriv: cannot make a file unreadable")
    return ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", *command]


# --- the readers, in this process --------------------------------------------------------------


def test_metrics_json_is_read_only_where_it_is_a_small_regular_file(tmp_path: Path) -> None:
    (tmp_path / "outside.json").write_text('{"status": "completed"}')
    (tmp_path / "metrics.json").symlink_to(tmp_path / "outside.json")
    with pytest.raises(ValueError, match="it is a link: not read"):
        read_metrics(tmp_path)
    (tmp_path / "metrics.json").unlink()
    (tmp_path / "metrics.json").write_text("[" * 100_000)
    with pytest.raises(ValueError, match="nested too deeply"):
        read_metrics(tmp_path)


@pytest.mark.parametrize(
    ("config", "reason"),
    [
        ("objective: [val_loss]\n", "objective must be text, not list"),
        ("\n".join(BOMB) + "\nobjective: a0\n", "it uses YAML anchors or aliases"),
        ("a: &a [*a]\nobjective: x\n", "it uses YAML anchors or aliases"),
        ("objective: !!python/object/apply:os.system [echo]\n", "ConstructorError"),
    ],
    ids=["list", "alias bomb", "alias loop", "code"],
)
def test_a_crafted_config_yaml_is_one_line(tmp_path: Path, config: str, reason: str) -> None:
    folder = craft_job(tmp_path, "0_x", 0, ["a=1"], "val_loss", GOOD)
    overwrite(folder / ".hydra", "config.yaml", config)
    job = jobs.read_job(folder)
    assert job.status == "unreadable" and job.num == 0
    assert job.metrics["error"].startswith(f"unreadable: .hydra/config.yaml: {reason}")


def test_cells_show_any_number_in_a_few_characters() -> None:
    assert cell("val_loss", 1e300) == "1e+300" and cell("val_accuracy", 1e300) == "1e+302%"
    assert cell("val_loss", -0.0) == "-0.0000" and cell("val_loss", 0.1234567) == "0.1235"
    assert cell("steps", 10**400) == "1.000e+400" and cell("steps", -(10**20)) == "-1.000e+20"
    assert cell("val_loss", float("nan")) == "nan" and cell("x", "a\nb\x1b[2J") == "a b\\u001b[2J"
    assert groups.average([1e308, 1e308]) == 1e308  # where the sum is past the largest float


def test_a_fifo_in_place_of_the_report_stamp_is_not_waited_on(tmp_path: Path) -> None:
    """After each job a sweep reads .report.time: a FIFO there would block the sweep for good."""
    craft_job(tmp_path, "0_good", 0, ["optimizer.lr=0.1"], "val_loss", GOOD)
    os.mkfifo(tmp_path / ".report.time")
    rebuild = threading.Thread(target=page.refresh, args=(tmp_path, 60.0), daemon=True)
    rebuild.start()
    rebuild.join(timeout=60)
    assert not rebuild.is_alive(), "refresh waits on the FIFO"
    assert (tmp_path / "report.html").exists()  # no stamp to read: built


@pytest.mark.slow  # mnistlab-summarize
def test_a_reader_that_stops_early_gets_no_traceback(tmp_path: Path) -> None:
    """`mnistlab-summarize <sweep> | head -1`: the pipe closes before the table is printed."""
    craft_job(tmp_path / "sweep", "0_good", 0, ["optimizer.lr=0.1"], "val_loss", GOOD)
    reader, writer = os.pipe()
    os.close(reader)  # gone before the command prints: its first line meets a closed pipe
    try:
        command = [sys.executable, "-m", "mnistlab.cli.summarize", str(tmp_path / "sweep")]
        result = subprocess.run(
            command, stdout=writer, stderr=subprocess.PIPE, text=True, env=child_env(), timeout=120
        )
    finally:
        os.close(writer)
    assert (result.returncode, result.stderr) == (1, "")


@pytest.mark.slow  # a sweep folder, mnistlab-summarize and a browser
def test_the_pages_own_script_runs_under_its_policy_and_links_stay_in_the_sweep(tmp_path):
    browser = chromium()
    sweep = tmp_path / "sweep"
    crafted_sweep(sweep, "javascript:alert(1)")  # a folder name that would be a link's scheme
    result = run_cli("mnistlab.cli.summarize", str(sweep), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    page = (sweep / "report.html").read_text()
    found = re.search(r'http-equiv="Content-Security-Policy" content="([^"]*)"', page)
    policy = html.unescape(found.group(1))
    assert "default-src 'none'" in policy and "script-src 'sha256-" in policy
    hrefs = re.findall(r'<a href="([^"]*)"', page)
    assert hrefs and all(":" not in href and not href.startswith(("/", "..")) for href in hrefs)
    shown = subprocess.run(
        [browser, "--headless", "--no-sandbox", "--disable-gpu",
         f"--user-data-dir={tmp_path / 'profile'}", "--dump-dom", (sweep / "report.html").as_uri()],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert shown.returncode == 0, shown.stderr[-2000:]
    assert 'title="click to sort"' in shown.stdout  # our script ran: the policy allows it
    assert_only_our_markup(shown.stdout)


@pytest.mark.slow  # a browser
def test_ticking_two_jobs_shows_the_settings_that_differ_as_text(tmp_path: Path) -> None:
    from mnistlab.benchmark.report_speed import make_sweep
    from mnistlab.report import page

    browser = chromium()
    sweep = make_sweep(tmp_path, 3)
    for job, lr, name in (("0_job", 0.5, SCRIPT), ("1_job", 0.25, "plain")):
        config = {"objective": "val_loss", "optimizer": {"lr": lr, "name": name}}
        (sweep / job / ".hydra" / "config.yaml").write_text(yaml.safe_dump(config))
        (sweep / job / "provenance.json").write_text(json.dumps({"host": f"node-{job[0]}"}))
    page.write_report([sweep], sweep / "report.html")
    text = (sweep / "report.html").read_text()
    assert text.count("</script>") == 2  # ours, and the settings' JSON: the payload's is escaped
    # The page's policy lets no other script tick the boxes: a copy without it, with one more.
    tick = (
        "<script>var boxes = ['0_job', '1_job'].map(function (job) {"
        "  return document.querySelector('input.pick[data-job=\"' + job + '\"]'); });"
        "boxes.forEach(function (box) { box.checked = true; });"
        'boxes[1].dispatchEvent(new Event("change", {bubbles: true}));</script></body>'
    )
    unlocked = re.sub(r'<meta http-equiv="Content-Security-Policy"[^>]*>', "", text)
    (tmp_path / "ticked.html").write_text(unlocked.replace("</body>", tick))
    ticked = (tmp_path / "ticked.html").as_uri()
    shown = subprocess.run(
        [browser, "--headless", "--no-sandbox", "--disable-gpu",
         f"--user-data-dir={tmp_path / 'profile'}", "--dump-dom", ticked],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert shown.returncode == 0, shown.stderr[-2000:]
    diff = re.search(r'id="jobs-0-settings-diff">(.*?)</p>', shown.stdout, re.S).group(1)
    rows = re.findall(r"<tr>(.*?)</tr>", diff)
    (_, first, second), *differ = [re.findall(r"<t[hd]>(.*?)</t[hd]>", row) for row in rows]
    pairs = {key: {first: one, second: other} for key, one, other in differ}  # in table order
    assert pairs == {
        "optimizer.lr": {"0_job": "0.5", "1_job": "0.25"},
        "optimizer.name": {"0_job": html.escape(SCRIPT, quote=False), "1_job": "plain"},
        "provenance.host": {"0_job": "node-0", "1_job": "node-1"},  # as mnistlab-diff has it
    }  # the payload as text: the browser built no element of it
    assert "pwned" not in re.search(r"<title>(.*?)</title>", shown.stdout, re.S).group(1)
