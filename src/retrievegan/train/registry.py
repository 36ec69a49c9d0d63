"""Method registry: method name -> ``"module:Class"``, imported only when used.

To add a method, add one line to ``METHODS`` (the names are those of docs/architecture.md). A variant
(``retrievegan.eval.methods.VARIANTS``: a method trained with config overrides under its own name) builds
its base method's class; its name is what the checkpoint, run.json and the sample manifest record.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any

from retrievegan.config import from_mapping
from retrievegan.data.dataset import DataSpec
from retrievegan.errors import ConfigError
from retrievegan.train.method import Method

METHODS: Mapping[str, str] = MappingProxyType({
    "sg2im": "retrievegan.models.baselines.sg2im:Sg2ImMethod",
    "layout2im": "retrievegan.models.baselines.layout2im:Layout2ImMethod",
    "attngan": "retrievegan.models.baselines.attngan:AttnGanMethod",
    "pastegan": "retrievegan.models.baselines.pastegan:PasteGan",
    "retrievegan": "retrievegan.models.retrievegan:RetrieveGan",
    "retrievegan_no_gt_no_occur": "retrievegan.models.retrievegan:RetrieveGanNoGtNoOccur",
    "retrievegan_gt_only": "retrievegan.models.retrievegan:RetrieveGanGtOnly",
    "retrievegan_occur_only": "retrievegan.models.retrievegan:RetrieveGanOccurOnly",
})


def method_class(name: str) -> type[Method]:
    """The class of a registered method, or of a variant's base method."""
    from retrievegan.eval.methods import VARIANTS, base_method

    try:
        target = METHODS[base_method(name)]
    except KeyError:
        raise ConfigError(f"unknown method {name!r}; registered: {sorted(METHODS)}, variants: "
                          f"{sorted(VARIANTS)}") from None
    module_name, _, attr = target.partition(":")
    cls = getattr(importlib.import_module(module_name), attr)
    if not (isinstance(cls, type) and issubclass(cls, Method)):
        raise TypeError(f"{target} is not a Method subclass")
    return cls


def create_method(name: str, params: Mapping[str, Any] | None, spec: DataSpec,
                  inputs: Mapping[str, str | Path] | None = None) -> Method:
    """Build method ``name`` from its config section (unknown keys are errors) and the data spec."""
    cls = method_class(name)
    cfg = from_mapping(cls.config_class, params, name)
    return cls(cfg, spec, {k: Path(v) for k, v in (inputs or {}).items()})
