"""Where a run came from, in its folder: provenance.json, and uncommitted.patch where the
checkout it ran from had changes.

Recorded: the git checkout of the folder the command ran in (the user's experiment code: its
commit, branch, `git diff HEAD` and untracked files, or "not a git checkout"), whether mnistlab
itself is an editable checkout (and its commit), the command line, the versions of Python and
the libraries, the OS, the CPU (model, the flags that decide bf16's speed), the GPU and CUDA, the
host, SLURM's and torchrun's ids, the start time. Hydra saves the config only; this says what
ran it.

Cheap and never fatal: a part that cannot be found (no git, a timeout, a damaged install) is a
note in its place, and the run goes on. What a process cannot change under a running run
(versions, CPU, the checkouts, whose code it has imported) is found once per process: a sweep's
later jobs in the same process reuse it. Kept free of torch until a run asks (`record`).
"""

import datetime
import functools
import hashlib
import importlib.metadata
import json
import logging
import os
import platform
import shlex
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from mnistlab.files import size_text, write_bytes, write_json
from mnistlab.names import NOT_A_CHECKOUT, PATCH_FILE, PROVENANCE_FILE

log = logging.getLogger(__name__)

GIT_TIMEOUT = 5.0  # seconds, for each git command
PATCH_LIMIT = 1_000_000  # bytes of `git diff HEAD` kept: more is cut, and said to be
UNTRACKED_LIMIT = 100  # untracked paths listed (git lists an untracked folder as one path)
# CPU flags (Linux's /proc/cpuinfo names) that change what torch runs fast: bf16 is native only
# with AVX512-BF16 or AMX (mnistlab.private.torch.cpu_bf16_native), AVX-512 speeds float32.
CPU_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_bf16", "fma")
# What SLURM and torchrun say about the process's place in a job.
LAUNCH_VARIABLES = (
    "SLURM_JOB_ID",
    "SLURM_ARRAY_JOB_ID",
    "SLURM_ARRAY_TASK_ID",
    "SLURM_JOB_NODELIST",
    "SLURM_NTASKS",
    "SLURM_PROCID",
    "TORCHELASTIC_RUN_ID",
    "RANK",
    "WORLD_SIZE",
    "LOCAL_RANK",
    "MASTER_ADDR",
)


def safely(part: Callable[[], Any]) -> Any:
    """`part()`, or a note saying why it could not be found: provenance never stops a run."""
    try:
        return part()
    except Exception as error:  # any failure, from git to a damaged install, is only recorded
        return {"note": f"not found: {type(error).__name__}: {error}"}


def record(folder: Path, started: datetime.datetime, device: Any = None) -> dict[str, Any]:
    """Write provenance.json (and uncommitted.patch) into `folder`; the provenance written.

    A file that cannot be written is a warning: the run goes on. Not flushed to disk (an fsync
    each would double a sweep job's cost): a machine crash at the run's start may lose them.
    """
    found, patch = gather(started, device)
    try:
        if patch is None:
            (folder / PATCH_FILE).unlink(missing_ok=True)  # an earlier run's, in this folder
        else:
            write_bytes(folder / PATCH_FILE, patch, durable=False)
        write_json(folder / PROVENANCE_FILE, found, durable=False)
    except OSError as error:
        log.warning("%s not written in %s: %s", PROVENANCE_FILE, folder, error)
    return found


def gather(started: datetime.datetime, device: Any = None) -> tuple[dict[str, Any], bytes | None]:
    """The provenance of a run starting now in this process, and its patch (None: none)."""
    cwd = safely(os.getcwd)  # a note where the folder was removed
    pair = safely(lambda: checkout(cwd))
    git, patch = pair if isinstance(pair, tuple) else (pair, None)
    found = {
        "started": started.astimezone().isoformat(timespec="seconds"),
        "command": safely(lambda: shlex.join(sys.orig_argv)),
        "cwd": cwd,
        "git": git,
        "mnistlab": safely(mnistlab_install),
        "versions": safely(versions),
        "os": safely(operating_system),
        "cpu": safely(cpu),
        "gpu": safely(lambda: gpu(device)),
        "host": safely(socket.gethostname),
        "launch": {name: os.environ[name] for name in LAUNCH_VARIABLES if name in os.environ},
    }
    return found, patch


def run_git(folder: str, *args: str) -> subprocess.CompletedProcess[bytes]:
    """`git -C folder args...`, no shell, no lock taken (GIT_OPTIONAL_LOCKS=0), time-limited."""
    return subprocess.run(
        ["git", "-C", folder, *args],
        capture_output=True,
        stdin=subprocess.DEVNULL,
        timeout=GIT_TIMEOUT,
        env=os.environ | {"GIT_OPTIONAL_LOCKS": "0", "LC_ALL": "C"},
        check=False,
    )


@functools.cache
def checkout(folder: str) -> tuple[dict[str, Any], bytes | None]:
    """The git checkout holding `folder`: its state, and `git diff HEAD` where it has changes."""
    top = run_git(folder, "rev-parse", "--show-toplevel")
    if top.returncode != 0:
        said = top.stderr.decode(errors="replace").strip()
        if "not a git repository" in said:
            return {"note": NOT_A_CHECKOUT}, None
        return {"note": f"git: {said.splitlines()[0] if said else top.returncode}"}, None
    found = {"checkout": top.stdout.decode(errors="replace").strip()} | status(folder)
    if not found["changed"] or found["commit"] is None:
        return found, None
    return with_patch(folder, found)


def status(folder: str) -> dict[str, Any]:
    """Commit, branch, how many tracked files changed, and the untracked paths."""
    done = run_git(folder, "status", "--porcelain=v2", "--branch", "-z")
    done.check_returncode()
    entries = iter(done.stdout.decode(errors="replace").split("\0"))
    found: dict[str, Any] = {"commit": None, "branch": None, "changed": 0, "untracked": []}
    for entry in entries:
        if entry.startswith("# branch.oid "):
            oid = entry.removeprefix("# branch.oid ")
            found["commit"] = None if oid == "(initial)" else oid
        elif entry.startswith("# branch.head "):
            found["branch"] = entry.removeprefix("# branch.head ")
        elif entry[:2] in ("1 ", "2 ", "u "):
            found["changed"] += 1
            if entry.startswith("2 "):
                next(entries, None)  # a rename's second path
        elif entry.startswith("? "):
            found["untracked"].append(entry[2:])
    untracked = found["untracked"]
    if len(untracked) > UNTRACKED_LIMIT:
        found["untracked"] = untracked[:UNTRACKED_LIMIT] + [f"... {len(untracked)} in all"]
    return found


def with_patch(folder: str, found: dict[str, Any]) -> tuple[dict[str, Any], bytes | None]:
    """`found` with what `git diff HEAD` says (size, hash, whether cut), and the patch."""
    done = run_git(folder, "diff", "HEAD", "--no-ext-diff", "--no-textconv", "--no-color")
    done.check_returncode()
    patch = done.stdout
    facts = {"file": PATCH_FILE, "bytes": len(patch), "sha256": hashlib.sha256(patch).hexdigest()}
    if len(patch) > PATCH_LIMIT:
        patch = patch[: patch.rfind(b"\n", 0, PATCH_LIMIT) + 1]
        facts["cut"] = f"cut at {size_text(len(patch))} of {size_text(facts['bytes'])}"
    return found | {"patch": facts}, patch


@functools.cache
def mnistlab_install() -> dict[str, Any]:
    """mnistlab's version, and where it is an editable checkout, that checkout's commit."""
    dist = importlib.metadata.distribution("mnistlab")
    direct = json.loads(dist.read_text("direct_url.json") or "{}")
    if not direct.get("dir_info", {}).get("editable", False):
        return {"version": dist.version, "install": "installed package (not a checkout)"}
    where = unquote(urlparse(direct["url"]).path)
    git, _ = checkout(where)
    state = {key: git[key] for key in ("commit", "branch", "changed", "note") if key in git}
    return {"version": dist.version, "install": f"editable checkout {where}"} | state


@functools.cache
def versions() -> dict[str, str]:
    """The versions of Python and of the libraries a run's results depend on."""
    import hydra
    import numpy
    import omegaconf
    import torch

    return {
        "python": platform.python_version(),
        "mnistlab": importlib.metadata.version("mnistlab"),
        "torch": torch.__version__,
        "hydra": hydra.__version__,
        "omegaconf": omegaconf.__version__,
        "numpy": numpy.__version__,
    }


@functools.cache
def operating_system() -> str:
    """`Linux 6.8.0 x86_64 (Ubuntu 24.04.1 LTS)`: the kernel, and the distribution where known."""
    kernel = f"{platform.system()} {platform.release()} {platform.machine()}"
    try:
        return f"{kernel} ({platform.freedesktop_os_release()['PRETTY_NAME']})"
    except (OSError, KeyError):  # not Linux, or no os-release file
        return kernel


@functools.cache
def cpu() -> dict[str, Any]:
    """The CPU's model, cores, the flags that matter, and what torch makes of it."""
    import torch

    from mnistlab.private.torch import cpu_bf16_native

    model, flags = cpuinfo()
    return {
        "model": model or platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "flags": [flag for flag in CPU_FLAGS if flag in flags],
        "torch_capability": torch.backends.cpu.get_cpu_capability(),
        "bf16_native": cpu_bf16_native(),
    }


def cpuinfo(path: str = "/proc/cpuinfo") -> tuple[str | None, set[str]]:
    """The first processor's model name and flags in Linux's /proc/cpuinfo (none elsewhere)."""
    model, flags = None, set()
    try:
        with open(path, encoding="utf-8", errors="replace") as file:
            for line in file:
                key, _, value = line.partition(":")
                key = key.strip()
                if key == "model name" and model is None:
                    model = value.strip()
                elif key in ("flags", "Features"):  # x86, Arm
                    flags = set(value.split())
                elif not line.strip() and flags:  # the first processor's block has ended
                    break
    except OSError:
        pass
    return model, flags


def gpu(device: Any) -> dict[str, Any]:
    """CUDA's version in this torch, and the GPU's name where the run uses one."""
    import torch

    found: dict[str, Any] = {"cuda": torch.version.cuda}
    if device is None or device.type != "cuda":
        return found | {"name": None}  # naming one would start CUDA in a CPU run
    return found | {"name": torch.cuda.get_device_name(device)}


def flat(value: Any, prefix: str = "") -> dict[str, Any]:
    """Nested mappings as one mapping of dotted keys; lists as JSON text."""
    if isinstance(value, dict):
        found: dict[str, Any] = {}
        for key, inner in value.items():
            found |= flat(inner, f"{prefix}.{key}" if prefix else str(key))
        return found
    if isinstance(value, list):
        return {prefix: json.dumps(value)}
    return {prefix: value}


def as_text(found: dict[str, Any]) -> str:
    """The provenance as TensorBoard's Text tab shows it: one `key: value` line each, indented
    (TensorBoard renders Markdown; an indented block shows as written)."""
    lines = [f"{key}: {one_line(value)}" for key, value in flat(found).items()]
    return "\n".join("    " + line for line in lines)


def one_line(value: Any) -> str:
    """`value` on one line: text holding a line break or a control character as JSON text."""
    text = str(value)
    return text if text.isprintable() else json.dumps(text)
