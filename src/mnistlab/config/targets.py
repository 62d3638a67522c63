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
    # The schedulers' (mnistlab.parts.schedulers).
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


def check_target(node: DictConfig, name: str) -> None:
    """Refuse keys the `_target_` does not accept, values of the wrong type or out of range."""
    target = load_target(node._target_, name)
    parameters = inspect.signature(target, eval_str=True).parameters
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())
    values = OmegaConf.to_container(node, resolve=True)
    check_finite(values, name)
    for key, value in values.items():
        if key.startswith("_"):
            continue
        if key not in parameters:
            if takes_any:
                continue
            allowed = ", ".join(p for p in parameters if p not in ("self", "params"))
            raise SettingError(
                f"{name}.{key} is not accepted by {node._target_}: use one of {allowed}"
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


def check_range(value: Any, name: str, key: str) -> None:
    """Refuse a number outside what RANGES allows for a parameter called `key`."""
    if key not in RANGES or value is None:
        return
    allowed, text = RANGES[key]
    numbers = value if isinstance(value, list) else [value]
    if not all(has_type(number, float) and allowed(number) for number in numbers):
        raise SettingError(f"{name}={value!r} must be {text}")


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
