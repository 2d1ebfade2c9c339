"""`_target_`: the one way a config section names the Python object that implements it.

Every choice in conf/ is a `_target_` (algorithm, model, sampler, reward, regime), e.g.
`_target_: qrpo.rewards.vader.VaderReward.from_config`; your own class or function works the same way
once it is importable. `locate` imports it (or raises one InputError naming the key), `build` calls it
with the typed section, `build_algorithm` builds a method from its keyword arguments, and `declares` /
`check_target` read what the object says about itself (its family, its capabilities, its own checks).
"""

from __future__ import annotations

import copy
import importlib
import inspect
import typing
from typing import Any

from qrpo.config.sections import AlgorithmConfig, algorithm_section, check_type
from qrpo.errors import InputError, UnknownKeyError


def locate(key: str, target: Any) -> Any:
    """The object `target` names ("package.module.Name", "package.module.Class.method" or
    "package.module:Name"); `key` (e.g. "reward._target_") names the setting in the message."""
    if not isinstance(target, str) or not target.replace(":", ".").strip("."):
        raise InputError(f"{key} must be a dotted path to a class or function (e.g. package.module.Name); got {target!r}")
    path = target.replace(":", ".")
    parts = path.split(".")
    module, error = None, None
    for cut in range(len(parts), 0, -1):  # the longest importable module prefix, then attributes
        try:
            module = importlib.import_module(".".join(parts[:cut]))
            break
        except ModuleNotFoundError as err:
            error = err
            if err.name and not ".".join(parts[:cut]).startswith(err.name):
                raise InputError(f"{key}={target!r}: importing it failed ({err}); install what it needs") from None
        except ImportError as err:
            raise InputError(f"{key}={target!r}: importing it failed ({err}); install what it needs") from None
    if module is None:
        raise InputError(f"{key}={target!r}: no module {parts[0]!r} ({error}); install it or put it on PYTHONPATH") from None
    obj = module
    for depth, name in enumerate(parts[cut:], start=cut):
        if not hasattr(obj, name):
            raise InputError(f"{key}={target!r}: {'.'.join(parts[:depth])} has no attribute {name!r}; check the name")
        obj = getattr(obj, name)
    if not callable(obj):
        raise InputError(f"{key}={target!r} is not a class or function")
    return obj


def keyword_parameters(function: Any) -> tuple[list[str], bool]:
    """(the names `function` takes by keyword, in order, `self` left out; whether it also takes any
    keyword, **kwargs). A callable without a readable signature (some builtins): ([], True)."""
    try:
        parameters = inspect.signature(function).parameters.values()
    except (TypeError, ValueError):
        return [], True
    names = [p.name for p in parameters if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.name != "self"]
    return names, any(p.kind is p.VAR_KEYWORD for p in parameters)


def check_arguments(section: str, target: Any, kwargs: dict[str, Any]) -> None:
    """Check `kwargs` against the annotations of `target`'s signature (a class: its __init__), so that
    `algorithm.beta=abc` says "algorithm.beta must be a number or null; got 'abc'"."""
    function = target.__init__ if inspect.isclass(target) else target
    valid, takes_any = keyword_parameters(function)
    if not takes_any and (unknown := [name for name in kwargs if name not in valid]):
        raise UnknownKeyError(section, unknown, valid)
    try:
        hints = typing.get_type_hints(function)
    except Exception:  # annotations that do not resolve: nothing to check against
        return
    for name, value in kwargs.items():
        if name in hints and name != "return":
            check_type(f"{section}.{name}", value, hints[name])


def build_algorithm(section: AlgorithmConfig | dict) -> Any:
    """The algorithm its `_target_` names (qrpo.objective.algorithms.QRPO, DPO, ... or your own class), built with the
    section's keyword arguments, type-checked first against its signature; any error is one InputError,
    "algorithm (<target>): <cause>". `section`: the typed algorithm section or the mapping it comes from."""
    section = algorithm_section(section) if isinstance(section, dict) else section
    built = vars(section).get(_BUILT)
    if built is not None:  # built once per run: validation, the pipeline and the train step share it
        return built
    target = locate("algorithm._target_", section._target_)
    check_arguments("algorithm", target, section.arguments)
    try:
        built = target(**copy.deepcopy(section.arguments))
    except UnknownKeyError:  # already names the key and the valid ones
        raise
    except Exception as err:  # a value the class refuses (ValueError, InputError), a missing argument (TypeError)
        raise InputError(f"algorithm ({section._target_}): {err}") from None
    object.__setattr__(section, _BUILT, built)
    return built


_BUILT = "_built"  # the algorithm a section built, kept on the (frozen) section


def build(section: str, cfg: Any, *args: Any) -> Any:
    """Import the section's `_target_` and call it with the typed section (and `args`)."""
    return locate(f"{section}._target_", cfg._target_)(cfg, *args)


def _owner(obj: Any) -> Any:
    """The class of a `Class.method` target (where its declarations live), else the target itself."""
    owner = getattr(obj, "__self__", None)  # a classmethod bound to its class
    return owner if inspect.isclass(owner) else obj


def declares(section: str, cfg: Any, capability: str) -> bool:
    """Whether the object a section's `_target_` names declares `capability` (e.g. a reward's
    `yields_pass_rates`, a regime's `pointwise`), read without building it: the class of a
    `Class.from_config` target, or an attribute set on a plain function target; False when neither says."""
    return bool(getattr(_owner(locate(f"{section}._target_", cfg._target_)), capability, False))


def check_target(section: str, cfg: Any) -> None:
    """Before any work: the section's `_target_` imports; the family it declares (e.g. JudgeReward.kind =
    "judge") is the one the section's keys are for (`cfg.FAMILY`: reward.kind, model.source, ...); and its
    own `check_config(cfg)`, if it has one, passes (e.g. GGUFModel: the package and file exist)."""
    owner = _owner(locate(f"{section}._target_", cfg._target_))
    family = cfg.FAMILY
    declared, configured = getattr(owner, family, None), getattr(cfg, family)
    if isinstance(declared, str) and declared != configured:
        raise InputError(f"{section}._target_={cfg._target_!r} builds {section}.{family}={declared}, not {configured}; "
                         f"pick a {section} group that sets both ({section}=<name>, conf/{section}/), or set {section}._target_ too")
    check = getattr(owner, "check_config", None)
    if callable(check):
        check(cfg)
