"""Settings that mean nothing, and the mistakes of a new user, stop in one line (issue 25).

Each line names the setting and the fix, and comes before any work starts. The cases the
issue lists run the real CLI; the rest of each class (the values one would try next) goes
through the same checks in-process, which is much quicker.
"""

import os
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.errors import HydraException

import hydra_plugins
from conftest import child_env, compose_config, run_cli
from mnistlab import SettingError, names
from mnistlab.cli import arguments
from mnistlab.config import checks

NESTED = "[" * 5000 + "]" * 5000
CORES = len(os.sched_getaffinity(0))

# (id, overrides, the one line (its start), whether Hydra's job frame comes before it)
CLI_CASES = [
    (
        "accuracy-target-2",
        ["loop.target.metric=val_accuracy", "loop.target.value=2"],
        "loop.target.value=2.0 cannot be reached by val_accuracy, a fraction of 1: use a value",
        False,  # checked before Hydra runs the job: no job frame
    ),
    (
        "threads-1000",
        ["device.threads=1000"],
        f"device.threads=1000 is more than the {CORES} CPU cores this process may use: use at "
        f"most device.threads={CORES}",
        False,  # checked before Hydra runs the job: no job frame
    ),
    ("compile-3", ["loop.compile=3"], "loop.compile=3: must be true or false", False),
    ("shuffle-2", ["dataset.loader.shuffle=2"], "dataset.loader.shuffle=2: must be true or", False),
    ("overwrite-yes", ["loop.overwrite=yes"], "loop.overwrite=yes: must be true or false", False),
    (
        "deadline-0",
        ["dataset=idx", "dataset.source.download_deadline_s=0"],
        "dataset.source.download_deadline_s=0 must be a number of seconds > 0, e.g. 600",
        True,
    ),
    (
        "deadline-minus-5",
        ["dataset=idx", "dataset.source.download_deadline_s=-5"],
        "dataset.source.download_deadline_s=-5 must be a number of seconds > 0",
        True,
    ),
    (
        "seed-too-big",
        ["loop.seed=99999999999999999999999"],
        "loop.seed=99999999999999999999999 must be an integer from 0 to 4294967295, e.g. 1",
        False,  # checked before Hydra runs the job: no job frame
    ),
    ("delete-model", ["~model"], "~model: a run needs model; choose one of model=cnn, mlp", False),
    (
        "nested-brackets",
        [f"loop.epochs={NESTED}"],
        "loop.epochs=...: its value nests brackets 5000 deep, more than can be read",
        False,
    ),
    ("epochs-three", ["loop.epochs=three"], "loop.epochs=three: must be an integer", False),
    (
        "learning-rate",
        ["optimizer.learning_rate=0.1"],
        "optimizer.learning_rate is not a setting of optimizer=adam; its settings are: lr, betas,",
        False,
    ),
]


def one_line(result, frame: bool) -> str:
    """The one line a refused command printed (after Hydra's job frame, where `frame`)."""
    lines = [line for line in result.stderr.splitlines() if line]
    if frame:  # Hydra prints which job failed before the error a job raised
        assert lines and lines[0].startswith("Error executing job with overrides"), result.stderr
        lines = lines[1:]
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr and "HYDRA_FULL_ERROR" not in result.stderr
    return lines[0]


@pytest.mark.slow  # the real CLI
@pytest.mark.parametrize(
    ("overrides", "says", "frame"), [c[1:] for c in CLI_CASES], ids=[c[0] for c in CLI_CASES]
)
def test_nonsense_stops_in_one_line_before_any_work(tmp_path, overrides, says, frame):
    run = tmp_path / "run"
    result = run_cli(
        "mnistlab.cli.train", "dataset=random", *overrides, f"hydra.run.dir={run}", cwd=tmp_path
    )
    assert result.returncode == 1, result.stderr
    assert one_line(result, frame).startswith(says)
    assert "data:" not in result.stdout + result.stderr  # no data was loaded
    assert not run.exists()  # and nothing written


def hidden_plugins(tmp_path: Path, *hidden: str) -> dict[str, str]:
    """An environment whose Hydra plugins are this one's but `hidden`: as if not installed.

    A regular package named hydra_plugins first on the path takes the place of the namespace
    package the installed plugins share; it links every plugin but the hidden ones.
    """
    view = tmp_path / "view" / "hydra_plugins"
    view.mkdir(parents=True)
    (view / "__init__.py").touch()
    for folder in map(Path, hydra_plugins.__path__):
        for plugin in folder.iterdir():
            if plugin.name not in (*hidden, "__pycache__", "__init__.py"):
                (view / plugin.name).symlink_to(plugin)
    return child_env(view.parent)


EXTRAS = [
    (
        "optuna-preset",
        ("experiment=optuna_lr_search",),
        "hydra_optuna_sweeper",
        "experiment=optuna_lr_search needs Hydra's Optuna sweeper (hydra/sweeper/sampler/tpe), "
        'which is not installed: pip install "mnistlab[optuna]"',
    ),
    (
        "optuna-sweeper",
        ("-m", "hydra/sweeper=optuna"),
        "hydra_optuna_sweeper",
        "hydra/sweeper=optuna needs Hydra's Optuna sweeper (hydra/sweeper/optuna), which is not "
        'installed: pip install "mnistlab[optuna]"',
    ),
    (
        "joblib-launcher",
        ("-m", "hydra/launcher=joblib"),
        "hydra_joblib_launcher",
        "hydra/launcher=joblib needs Hydra's joblib launcher (hydra/launcher/joblib), which is "
        'not installed: pip install "mnistlab[launchers]"',
    ),
]


@pytest.mark.slow  # the real CLI
@pytest.mark.parametrize(
    ("overrides", "hidden", "says"), [c[1:] for c in EXTRAS], ids=[c[0] for c in EXTRAS]
)
def test_a_preset_without_its_plugin_names_the_install(tmp_path, overrides, hidden, says):
    sweep = tmp_path / "sweep"
    result = run_cli(
        "mnistlab.cli.train",
        *overrides,
        "dataset=random",
        f"hydra.sweep.dir={sweep}",
        cwd=tmp_path,
        env=hidden_plugins(tmp_path, hidden),
    )
    assert result.returncode == 1, result.stderr
    assert one_line(result, frame=False).startswith(says)
    assert not sweep.exists()


# --- the same classes in-process: the checks made before Hydra composes --------------------


def refused(*overrides: str) -> str:
    """The line arguments' checks refuse `overrides` with."""
    with pytest.raises(SettingError) as refusal:
        for override in arguments.parse(overrides):
            arguments.check(override)
    assert "\n" not in str(refusal.value)
    return str(refusal.value)


@pytest.mark.parametrize(
    ("override", "says"),
    [
        ("loop.compile=3", "loop.compile=3: must be true or false"),
        ("loop.compile=on", "loop.compile=on: must be true or false"),
        ("loop.compile=1.0", "loop.compile=1.0: must be true or false"),
        ("loop.compile=null", "loop.compile=null: must be true or false"),
        ("++loop.overwrite=yes", "loop.overwrite=yes: must be true or false"),  # a resume's form
        ("device.flush_denormal=no", "device.flush_denormal=no: must be true or false"),
        ("sweep.prune.median=1", "sweep.prune.median=1: must be true or false"),
        ("loop.channels_last=true,yes", "loop.channels_last=yes: must be true or false"),
        ("sweep.retry_failed=range(0,2)", "sweep.retry_failed=range(0,2): must be true or"),
        ("~loop", "~loop: a run needs loop; choose one of loop=default"),
        ("~objective", "~objective: a run needs objective; choose one of objective=train_loss,"),
        ("~loop.epochs", "~loop.epochs: the settings of loop cannot be removed; give loop.epochs"),
        ("~loop.target", "~loop.target: the settings of loop cannot be removed"),
        ("~dataset.source", "~dataset.source: the settings of dataset cannot be removed"),
        ("model.channels=[{]", "model.channels=[{]: "),
        ("a=" + "{a:" * 3000 + "1" + "}" * 3000, "a=...: its value nests brackets 3000 deep"),
    ],
)
def test_overrides_refused_before_hydra_composes(override, says):
    assert refused(override).startswith(says)


def test_true_false_and_what_is_not_a_schemas_flag_pass():
    for override in arguments.parse(
        [
            "loop.compile=true",
            "loop.compile=False",
            "loop.compile='true'",
            "loop.compile=${oc.env:COMPILE}",
            "loop.compile=true,false",
            "dataset=mnist",
            "dataset.source.download=yes",  # a builder's flag: refused by its target check
            "loop.precision=32",
            "~optimizer.weight_decay",
            "hydra.job.chdir=yes",
        ]
    ):
        arguments.check(override)


# --- Hydra's composition errors, in one line ------------------------------------------------


def translated(*overrides: str) -> str:
    """The line `translate` gives the error Hydra raises composing `overrides`."""
    parsed = arguments.parse(overrides)
    with initialize_config_dir(config_dir=names.CONF_DIR, version_base="1.3"):
        with pytest.raises(HydraException) as failure:
            compose(config_name=names.TRAIN_CONFIG, overrides=list(overrides))
        line = arguments.translate(failure.value, parsed, names.TRAIN_CONFIG)
    assert line is not None and "\n" not in line, failure.value
    return line


@pytest.mark.parametrize(
    ("overrides", "says"),
    [
        ("loop.epochs=three", "loop.epochs=three: must be an integer"),
        ("loop.epochs=3.5", "loop.epochs=3.5: must be an integer"),
        ("loop.epochs=null", "loop.epochs=null: must be an integer"),
        ("loop.grad_clip_norm=abc", "loop.grad_clip_norm=abc: must be a number or null"),
        ("dataset.loader.batch_size=[1,2]", "dataset.loader.batch_size=[1,2]: must be an integer"),
        (
            "optimizer=sgd optimizer.learning_rate=0.1",
            "optimizer.learning_rate is not a setting of optimizer=sgd; its settings are: lr, "
            "momentum, dampening, weight_decay, nesterov",
        ),
        (
            "optimizer.betas=[0.5,0.9]",
            "optimizer.betas is not in the config of optimizer=adam: add it with "
            "+optimizer.betas=[0.5,0.9]",
        ),
        (
            "model=cnn model.hiden=3",
            "model.hiden is not a setting of model=cnn; its settings are: channels, hidden, "
            "dropout, kernel_sizes, padding, shift",
        ),
        (
            "dataset=idx dataset.source.rot=x",
            "dataset.source.rot is not a setting of dataset.source (dataset=idx); its settings "
            "are: root, mirrors,",
        ),
        (
            "loop.target.valu=1",
            "loop.target.valu is not a setting of loop.target (loop=default); its settings are: "
            "metric, value",
        ),
        ("epochs=3", "epochs is not a setting of mnistlab-train: did you mean loop.epochs=3?"),
        ("model=nosuch", "model=nosuch is not an option of model: use one of cnn, mlp"),
        ("+loop.epochs=3", "+loop.epochs=3: loop.epochs is set already: leave out the +"),
        ("optimizer=sgd,adam", "optimizer=sgd,adam: several values make a sweep: add -m"),
    ],
)
def test_hydras_composition_errors_in_one_line(overrides, says):
    assert translated(*overrides.split()).startswith(says)


def test_an_error_hydra_words_well_is_left_to_it():
    assert arguments.translate(ValueError("boom"), [], names.TRAIN_CONFIG) is None


# --- meaningless values of the composed config ----------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "says"),
    [
        (
            "loop.target.metric=test_accuracy loop.target.value=0",
            "loop.target.value=0.0 cannot be reached by test_accuracy",
        ),
        (
            "loop.target.metric=val_loss loop.target.value=-1",
            "loop.target.value=-1.0 cannot be reached by val_loss: use a loss >= 0",
        ),
        ("loop.seed=-1", "loop.seed=-1 must be an integer from 0 to 4294967295"),
        ("dataset.source.seed=4294967296", "dataset.source.seed=4294967296 must be an integer"),
        (
            "dataset.loader.num_workers=2",
            "dataset.loader.num_workers=2 has no effect with dataset.loader.mode=tensor",
        ),
        (
            f"dataset.loader.mode=dataloader dataset.loader.num_workers={CORES + 1}",
            f"dataset.loader.num_workers={CORES + 1} is more than the {CORES} CPU cores",
        ),
        (
            "objective=val_accuracy loop.early_stopping.patience=2 loop.early_stopping.min_delta=1",
            "loop.early_stopping.min_delta=1.0 can never be beaten by val_accuracy",
        ),
        (
            "scheduler=onecycle scheduler.max_lr=0",
            "scheduler.max_lr=0 must be > 0",
        ),
        ("~model.hidden", "model.hidden is missing: mnistlab.parts.models.MNISTClassifier needs"),
        ("~optimizer._target_", "optimizer._target_ is missing: optimizer must name the class"),
        (
            "dataset=idx dataset.source.mirrors=[abc]",
            "dataset.source.mirrors=['abc']: 'abc' is not a URL to download from",
        ),
        (
            "dataset=idx dataset.source.mirrors=[ssh://host/mnist/]",
            "dataset.source.mirrors=['ssh://host/mnist/']: 'ssh://host/mnist/' is not a URL",
        ),
    ],
)
def test_meaningless_values_are_refused_by_the_checks(overrides, says):
    with pytest.raises(SettingError) as refusal:
        checks.check(compose_config(*overrides.split()))
    assert str(refusal.value).startswith(says) and "\n" not in str(refusal.value)


def test_meaningful_values_of_the_same_settings_pass():
    for overrides in (
        "loop.target.metric=val_accuracy loop.target.value=1",
        "loop.target.metric=val_loss loop.target.value=0",
        f"loop.seed=4294967295 device.threads={CORES}",
        "dataset.loader.mode=dataloader dataset.loader.num_workers=1",
        "objective=val_loss loop.early_stopping.patience=2 loop.early_stopping.min_delta=1",
        "dataset=idx dataset.source.mirrors=[https://a.example/mnist/,file:///srv/mnist/]",
    ):
        checks.check(compose_config(*overrides.split()))


def test_a_shift_beyond_half_the_image_is_refused():
    from mnistlab.parts.models import ConvNet

    settings = dict(channels=(4, 8), hidden=8, dropout=0.0, kernel_sizes=(3, 3), padding="same")
    ConvNet((28, 28), 10, **settings, shift=13)  # as far as a digit's centre stays in view
    with pytest.raises(SettingError, match=r"^model.shift=100 .* 28x28 images"):
        ConvNet((28, 28), 10, **settings, shift=100)


def test_api_train_makes_the_command_lines_checks(tmp_path):
    from mnistlab.cli import api

    with pytest.raises(SettingError, match="loop.overwrite=yes: must be true or false"):
        api.train(["dataset=random", "loop.overwrite=yes"], out_dir=tmp_path / "run")
    assert not (tmp_path / "run").exists()


@pytest.mark.slow  # the real CLI
def test_a_sweep_asking_for_more_cores_than_here_stops_before_any_job(tmp_path):
    sweep = tmp_path / "sweep"
    args = ("-m", "dataset=random", "device.threads=1000", "optimizer.lr=0.1,0.2")
    result = run_cli("mnistlab.cli.train", *args, f"hydra.sweep.dir={sweep}", cwd=tmp_path)
    assert result.returncode == 1
    assert one_line(result, frame=False).startswith("device.threads=1000 is more than the")
    assert not sweep.exists()
