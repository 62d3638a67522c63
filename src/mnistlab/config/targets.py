"""Checks of the swappable components (`_target_` nodes) against what they build.

Keys and values are checked against the signature of the class or function `_target_` names
(a list of two integers, a number...) and against RANGES, by parameter name; NaN and infinity
are refused everywhere. So a typo or an impossible value fails before any data is loaded.
"""

import collections.abc
import inspect
import math
import os
import types
import typing
import urllib.parse
from collections.abc import Callable
from typing import Any

from omegaconf import DictConfig, OmegaConf

from mnistlab import SettingError
from mnistlab.private import hydra as hydra_private


def check_finite(value: Any, name: str) -> None:
    """Refuse NaN and infinity anywhere in `value`: no setting means either (null means off)."""
    if isinstance(value, dict):
        for key, item in value.items():
            check_finite(item, f"{name}.{key}")
    elif isinstance(value, list):
        for item in value:
            check_finite(item, name)
    elif isinstance(value, float) and not math.isfinite(value):
        raise SettingError(f"{name}={value} must be a finite number, not NaN or infinity")


# The numbers a component may take, by parameter name, whichever class takes them (torch's
# optimizers, the models, the dataset builders); in a list, each number is checked.
RANGES: dict[str, tuple[Callable[[float], bool], str]] = {
    "lr": (lambda x: x > 0, "> 0"),
    "eps": (lambda x: x > 0, "> 0 (it keeps a division finite), e.g. 1e-8"),
    "weight_decay": (lambda x: x >= 0, ">= 0"),
    "momentum": (lambda x: 0 <= x < 1, "in [0, 1), e.g. 0.9"),
    "dampening": (lambda x: 0 <= x <= 1, "in [0, 1]"),
    "alpha": (lambda x: 0 <= x < 1, "in [0, 1), e.g. 0.99"),
    "betas": (lambda x: 0 <= x < 1, "two numbers in [0, 1), e.g. [0.9, 0.999]"),
    "dropout": (lambda x: 0 <= x < 1, "in [0, 1), e.g. 0.2"),
    "hidden": (lambda x: x >= 1, ">= 1, e.g. 128"),
    "channels": (lambda x: x >= 1, "two integers >= 1, e.g. [16, 32]"),
    "kernel_sizes": (lambda x: x >= 1 and x % 2 == 1, "two odd integers >= 1, e.g. [3, 3]"),
    "shift": (lambda x: x >= 0, ">= 0 pixels (0: no shifts), e.g. 2"),
    "num_samples": (lambda x: x >= 1, "an integer >= 1"),
    "num_val_samples": (lambda x: x >= 1, "an integer >= 1"),
    "num_train_samples": (lambda x: x >= 1, "an integer >= 1, or null for all"),
    "val_fraction": (lambda x: 0 < x < 1, "between 0 and 1, e.g. 0.1"),
    # Seeds go to torch's generators; numpy's range keeps the ones derived from them in torch's.
    "seed": (lambda x: 0 <= x < 2**32, f"an integer from 0 to {2**32 - 1}, e.g. 1"),
    "download_deadline_s": (lambda x: x > 0, "a number of seconds > 0, e.g. 600"),
    # The schedulers' (mnistlab.parts.schedulers).
    "max_lr": (lambda x: x > 0, "> 0"),
    "pct_start": (lambda x: 0 < x < 1, "in (0, 1), e.g. 0.25"),
    "div_factor": (lambda x: x > 0, "> 0, e.g. 25"),
    "final_div_factor": (lambda x: x > 0, "> 0, e.g. 10000"),
    "min_factor": (lambda x: 0 <= x <= 1, "in [0, 1], e.g. 0.1"),
    "gamma": (lambda x: 0 < x < 1, "in (0, 1), e.g. 0.5"),
    "every_epochs": (lambda x: x >= 1, "an integer >= 1"),
}


def load_target(path: str, name: str) -> Any:
    """What `_target_` names, or one line saying why it cannot be imported and how to fix it."""
    try:
        target = hydra_private.locate(path)
    except (ImportError, ValueError) as err:
        reason = str(err).splitlines()[-2 if "\n" in str(err) else -1].strip()
        raise SettingError(
            f"{name}._target_={path!r} cannot be imported ({reason}): install its package, "
            "or put its module on the import path (PYTHONPATH=. for a file in this folder)"
        ) from None
    if not callable(target):
        raise SettingError(f"{name}._target_={path!r} is not a class or function")
    return target


# What the builders pass at the call site, never the config: the parameters for the model
# (parts.models.build), the optimizer (parts.optimizers) and the schedule (parts.schedulers).
CALL_SITE = (
    "self",
    "input_shape",
    "num_classes",
    "params",
    "optimizer",
    "total_steps",
    "steps_per_epoch",
)
VARIADIC = (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)


def settings_of(target: Any) -> tuple[list[str], bool]:
    """The parameters a config may give `target`, and whether it takes any other (**kwargs)."""
    parameters = inspect.signature(target, eval_str=True).parameters.values()
    named = [p.name for p in parameters if p.name not in CALL_SITE and p.kind not in VARIADIC]
    return named, any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters)


def check_target(node: DictConfig, name: str) -> None:
    """Refuse keys the `_target_` does not accept, values of the wrong type or out of range."""
    if "_target_" not in node:
        raise SettingError(
            f"{name}._target_ is missing: {name} must name the class or function that builds it"
        )
    target = load_target(node._target_, name)
    parameters = inspect.signature(target, eval_str=True).parameters
    allowed, takes_any = settings_of(target)
    values = OmegaConf.to_container(node, resolve=True)
    check_finite(values, name)
    check_required(parameters, values, name)
    for key, value in values.items():
        if key.startswith("_"):
            continue
        if key not in parameters:
            if takes_any:
                continue
            raise SettingError(
                f"{name}.{key} is not accepted by {node._target_}: use one of {', '.join(allowed)}"
            )
        parameter = parameters[key]
        if not fits(value, parameter.annotation):
            example = plain(parameter.default)
            short = example not in (None, inspect.Parameter.empty) and len(repr(example)) < 30
            hint = f", e.g. {example}" if short else ""
            raise SettingError(
                f"{name}.{key}={value!r} must be {describe(parameter.annotation)}{hint}"
            )
        check_range(value, f"{name}.{key}", key)
        check_urls(value, f"{name}.{key}", key)


def check_required(
    parameters: typing.Mapping[str, inspect.Parameter], values: dict, name: str
) -> None:
    """Refuse a config without a value its target needs (`~model.hidden` removed it)."""
    for parameter in parameters.values():
        needed = parameter.default is inspect.Parameter.empty and parameter.kind not in VARIADIC
        if needed and parameter.name not in CALL_SITE and parameter.name not in values:
            raise SettingError(
                f"{name}.{parameter.name} is missing: {values.get('_target_')} needs it; give "
                f"it a value, e.g. +{name}.{parameter.name}=<value>"
            )


def check_range(value: Any, name: str, key: str) -> None:
    """Refuse a number outside what RANGES allows for a parameter called `key`."""
    if key not in RANGES or value is None:
        return
    allowed, text = RANGES[key]
    numbers = value if isinstance(value, list) else [value]
    if not all(has_type(number, float) and allowed(number) for number in numbers):
        raise SettingError(f"{name}={value!r} must be {text}")


# Where urllib can fetch a dataset's files from: a web server, or a folder (file:///...).
URL_SCHEMES = ("http", "https", "ftp", "file")


def check_urls(value: Any, name: str, key: str) -> None:
    """Refuse a mirror that is no URL urllib can open (`mirrors=[abc]`: a traceback at download)."""
    if key != "mirrors" or not isinstance(value, list):
        return
    for mirror in value:
        parts = urllib.parse.urlsplit(mirror) if isinstance(mirror, str) else None
        if parts is None or parts.scheme not in URL_SCHEMES or not (parts.netloc or parts.path):
            raise SettingError(
                f"{name}={value!r}: {mirror!r} is not a URL to download from: use "
                "https://<server>/<folder>/ (or file:///<folder>/), e.g. "
                "[https://ossci-datasets.s3.amazonaws.com/mnist/]"
            )


def plain(value: Any) -> Any:
    """A default as it is written in YAML: tuples as lists."""
    return list(value) if isinstance(value, tuple) else value


# What a YAML value can be, in words for messages.
PLAIN_TYPES = {
    int: ("an integer", "integers"),
    float: ("a number", "numbers"),
    str: ("a string", "strings"),
    bool: ("true or false", "true/false values"),
    type(None): ("null", "nulls"),
}


UNIONS = (typing.Union, types.UnionType)
SEQUENCES = (list, tuple, collections.abc.Sequence)


MAPPINGS = (dict, collections.abc.Mapping)


def fits(value: Any, kind: Any) -> bool:
    """Whether a plain config value fits a parameter's annotation (a list for a tuple too).

    A value is refused only where the annotation says clearly that it cannot be right: a
    string for a number or a list, a list of the wrong length, a number for a class such as
    torch.Tensor. Annotations it cannot read (Any, Callable, ...) accept anything.
    """
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if kind is inspect.Parameter.empty or (isinstance(value, dict) and "_target_" in value):
        return True  # no annotation; or instantiate builds it, its parameters unchecked here
    if kind in PLAIN_TYPES:
        return value is None if kind is type(None) else has_type(value, kind)
    if origin in UNIONS:
        return any(fits(value, arg) for arg in args)
    if origin is typing.Literal:
        return value in args
    if origin in SEQUENCES:
        if not isinstance(value, list):
            return False  # a string is a sequence too, but never the list that was meant
        if origin is tuple and args and args[-1] is not Ellipsis:
            return len(value) == len(args) and all(map(fits, value, args))
        return not args or all(fits(item, args[0]) for item in value)
    if origin in MAPPINGS:
        if not isinstance(value, dict):
            return False
        return not args or all(fits(k, args[0]) and fits(v, args[1]) for k, v in value.items())
    if isinstance(kind, type):
        return isinstance(value, str) if issubclass(kind, os.PathLike) else isinstance(value, kind)
    return True


def describe(kind: Any, many: bool = False) -> str:
    """An annotation in words: tuple[int, int] -> "a list of 2 integers"."""
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if kind in PLAIN_TYPES:
        return PLAIN_TYPES[kind][many]
    if origin in UNIONS:
        # Classes no YAML value can be (torch.Tensor) would only confuse the message.
        readable = [arg for arg in args if arg in PLAIN_TYPES or typing.get_origin(arg)]
        return " or ".join(describe(arg, many) for arg in readable or args)
    if origin in SEQUENCES:
        items = [arg for arg in args if arg is not Ellipsis]
        what = describe(items[0], many=True) if items else "values"
        count = f"{len(args)} " if origin is tuple and args[-1:] != (Ellipsis,) else ""
        return f"{'lists' if many else 'a list'} of {count}{what}"
    if origin in MAPPINGS:
        what = f" of {describe(args[0], True)} to {describe(args[1], True)}" if args else ""
        return f"{'mappings' if many else 'a mapping'}{what}"
    if origin is typing.Literal:
        return "one of " + ", ".join(map(str, args))
    return getattr(kind, "__name__", str(kind))


def has_type(value: Any, kind: type) -> bool:
    """isinstance, except that bool is no number and an int will do for a float."""
    if kind in (int, float) and isinstance(value, bool):
        return False
    return isinstance(value, int | float) if kind is float else isinstance(value, kind)
