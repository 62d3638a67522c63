"""Each private API of another library that mnistlab uses still exists and does what we rely on.

An upgrade that removes or changes one fails here, naming it, rather than deep inside a run.
"""

import atexit
import importlib
import subprocess
import sys

import pytest
import torch
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.utils import JobReturn, JobStatus
from omegaconf import OmegaConf

from conftest import ROOT
from mnistlab import names
from mnistlab.private import hydra as hydra_private
from mnistlab.private import interpreter, require
from mnistlab.private import matplotlib as matplotlib_private
from mnistlab.private import omegaconf as omegaconf_private


def test_a_missing_private_api_is_one_clear_import_error() -> None:
    with pytest.raises(ImportError, match=r"mnistlab uses atexit\._gone, which python"):
        require(atexit, "_gone", "python")


def test_hydra_locates_a_dotted_path() -> None:
    assert hydra_private.locate("mnistlab.names.read_metrics") is names.read_metrics
    with pytest.raises(ImportError):
        hydra_private.locate("mnistlab.names.no_such_thing")


def test_hydra_class_paths_name_the_classes_hydra_uses() -> None:
    for path in (hydra_private.BASIC_SWEEPER, hydra_private.BASIC_LAUNCHER):
        assert hydra_private.locate(path).__name__ == path.rsplit(".", 1)[1]
    assert hydra_private.basic_sweeper() is hydra_private.locate(hydra_private.BASIC_SWEEPER)


def test_hydra_splits_a_grid_into_one_batch_of_jobs() -> None:
    overrides = OverridesParser.create().parse_overrides(["a=1,2", "b=x,y,z"])
    (batch,) = hydra_private.split_arguments(overrides)
    assert len(batch) == 6 and ["a=1", "b=x"] in batch


def test_hydra_config_repository_lists_the_shipped_groups() -> None:
    repository = hydra_private.config_repository_of([f"file://{names.CONF_DIR}"])
    from hydra.core.object_type import ObjectType

    assert "adam" in repository.get_group_options("optimizer", ObjectType.CONFIG)


def test_hydra_job_return_keeps_a_failed_jobs_error_without_raising_it() -> None:
    error = ValueError("boom")
    job_return = JobReturn(status=JobStatus.FAILED, _return_value=error)
    assert hydra_private.returned(job_return) is error


def test_hydra_reads_a_command_line_as_its_entry_point_does() -> None:
    command = hydra_private.command_line(["-m", "--cfg", "job", "-cn", "other", "a=1", "b=x,y"])
    assert command.overrides == ["a=1", "b=x,y"] and command.config_name == "other"
    assert command.multirun and command.cfg == "job"
    assert hydra_private.command_line(["--version"]) is None  # Hydra answers that itself


def test_hydra_reports_errors_through_our_translation(monkeypatch) -> None:
    utils = importlib.import_module("hydra._internal.utils")
    monkeypatch.setattr(utils, "run_and_report", utils.run_and_report)  # put back afterwards
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    original = utils.run_and_report
    for _ in range(2):  # installed twice: one wrapper around Hydra's own
        hydra_private.report_errors(
            lambda error: "one line" if isinstance(error, KeyError) else None
        )
    assert utils.run_and_report.hydras is original
    # Hydra's entry point (_run_hydra) looks the function up by name each time it reports.
    assert "run_and_report" in utils._run_hydra.__code__.co_names
    with pytest.raises(SystemExit, match="^one line$"):
        utils.run_and_report(lambda: {}["missing"])
    assert utils.run_and_report(lambda: 3) == 3
    with pytest.raises(SystemExit) as hydras_report:  # what translate leaves: Hydra's own way
        utils.run_and_report(lambda: 1 / 0)
    assert hydras_report.value.code == 1
    monkeypatch.setenv("HYDRA_FULL_ERROR", "1")  # Hydra's switch for the whole traceback
    with pytest.raises(KeyError):
        utils.run_and_report(lambda: {}["missing"])


def test_omegaconf_gives_a_child_node_unresolved() -> None:
    node = OmegaConf.create({"a": "${b}", "b": 1})
    assert omegaconf_private.child(node, "a")._is_interpolation()


@pytest.mark.slow  # a Python process of its own (loky's workers)
def test_joblib_pool_is_found_where_joblib_made_one() -> None:
    code = (
        "from joblib import Parallel, delayed\n"
        "from mnistlab.private import joblib\n"
        "assert joblib.idle_pool() is None\n"
        "Parallel(n_jobs=2, backend='loky')(delayed(abs)(i) for i in range(2))\n"
        "pool = joblib.idle_pool()\n"
        "pool.shutdown(wait=True, kill_workers=True)\n"
        "print(sorted(c.__name__ for c in type(pool).__mro__))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    assert "_ReusablePoolExecutor" in done.stdout


@pytest.mark.slow  # a Python process of its own: the handlers end it
def test_python_runs_the_exit_handlers_on_request() -> None:
    code = (
        "import atexit, os\n"
        "from mnistlab.private import interpreter\n"
        "atexit.register(print, 'handler ran')\n"
        "interpreter.run_exit_handlers()\n"
        "os._exit(0)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.stdout == "handler ran\n", done.stderr
    assert callable(interpreter.run_exit_handlers)


def test_matplotlib_sets_a_log_scale_without_pyplot() -> None:
    from matplotlib.figure import Figure

    axes = Figure().add_subplot()
    matplotlib_private.log_scale(axes.xaxis)
    assert axes.get_xscale() == "log"


def test_optuna_internals_where_the_extra_is_installed() -> None:
    pytest.importorskip("optuna")
    from optuna.distributions import CategoricalDistribution, LogUniformDistribution

    from mnistlab.private import optuna as optuna_private

    rates = LogUniformDistribution(1e-4, 1e-1)
    assert optuna_private.contains(rates, 0.01)
    assert not optuna_private.contains(rates, 0.5)
    assert optuna_private.contains(CategoricalDistribution(["sgd", "adam"]), "adam")
    params, fixed = optuna_private.create_params_from_overrides(["optimizer=sgd,adam", "x=1"])
    assert list(params) == ["optimizer"] and fixed == {"x": "1"}
    assert optuna_private.OptunaSweeperImpl.__name__ == "OptunaSweeperImpl"


def test_torch_says_whether_this_cpu_computes_bf16_natively() -> None:
    from mnistlab.private import torch as torch_private

    assert torch_private.cpu_bf16_native() in (True, False)
    assert callable(torch.cpu._is_avx512_bf16_supported) and callable(
        torch.cpu._is_amx_tile_supported
    )


@pytest.mark.parametrize("bf16, amx", [(False, False), (True, False), (False, True)])
def test_on_x86_the_cpus_flags_decide_bf16_not_onednns_probe(monkeypatch, bf16, amx) -> None:
    # oneDNN says yes on any AVX-512 CPU (an Ice Lake Xeon: bf16 1.5x slower than float32).
    from mnistlab.private import torch as torch_private

    monkeypatch.setattr("platform.machine", lambda: "x86_64")
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: bf16)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx)
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: not (bf16 or amx))
    assert torch_private.cpu_bf16_native() == (bf16 or amx)
    monkeypatch.setattr("platform.machine", lambda: "aarch64")  # no such flags: oneDNN's probe
    assert torch_private.cpu_bf16_native() == (not (bf16 or amx))
