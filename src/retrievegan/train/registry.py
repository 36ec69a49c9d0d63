"""Builds a run's method: the class the run catalogue (``retrievegan.runs.METHODS``, ``implementation``) names,
imported only when used.

To add a method, add its :class:`retrievegan.runs.MethodInfo` to the catalogue. Table 2's ablations and the
variants build their method's class (the ablations with their loss switches in ``--params``); the run's name is
what the checkpoint, run.json and the sample manifest record.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from retrievegan.config import from_mapping
from retrievegan.data.dataset import DataSpec
from retrievegan.errors import ConfigError
from retrievegan.runs import METHODS, VARIANTS, base_method, method_info
from retrievegan.train.method import Method


def method_class(name: str) -> type[Method]:
    """The class of a catalogued method, or of a variant's base method."""
    try:
        target = METHODS[base_method(name)].implementation
    except KeyError:
        raise ConfigError(
            f"unknown method {name!r}; registered: {sorted(METHODS)}, variants: {sorted(VARIANTS)}"
        ) from None
    module_name, _, attr = target.partition(":")
    cls = getattr(importlib.import_module(module_name), attr)
    if not (isinstance(cls, type) and issubclass(cls, Method)):
        raise TypeError(f"{target} is not a Method subclass")
    return cls


def create_method(
    name: str, params: Mapping[str, Any] | None, spec: DataSpec, inputs: Mapping[str, str | Path] | None = None
) -> Method:
    """Build run ``name`` from its resolved params (``retrievegan.runs.run_params``; unknown keys are errors) and the
    data spec. A Table 2 ablation's params must carry its loss switches (a run never trains under another's name)."""
    cls = method_class(name)
    cfg = from_mapping(cls.config_class, params, name)
    expected = method_info(name).ablation
    if expected is not None and (cfg.gt_selection, cfg.cooccurrence) != expected:
        raise ConfigError(
            f"{name} trains with gt_selection={expected[0]}, cooccurrence={expected[1]} (paper Table 2); "
            f"the params have {cfg.gt_selection}, {cfg.cooccurrence} (retrievegan.runs.run_params)"
        )
    return cls(cfg, spec, {k: Path(v) for k, v in (inputs or {}).items()})
