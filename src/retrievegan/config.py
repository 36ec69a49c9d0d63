"""Resolved configuration: frozen dataclasses built from the validated YAML/JSON config.

Snakemake validates ``config/config.yaml`` against ``workflow/schemas/config.schema.yaml``;
each rule hands the section it needs to the CLI as JSON, and the CLI turns it into one of the
frozen dataclasses defined beside the code that uses it (``SynthConfig``, ``CocoStuffConfig``...).
``from_mapping`` rejects unknown keys and wrong types, so a stand-alone CLI call is checked too.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

from retrievegan.errors import ConfigError

T = TypeVar("T")


def _coerce(value: Any, annotation: Any, where: str) -> Any:
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if annotation is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, where)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(f"{where}: {value!r} does not match {annotation} ({'; '.join(errors)})")
    if origin is typing.Literal:
        if value not in args:
            raise ConfigError(f"{where}: {value!r} is not one of {list(args)}")
        return value
    if origin in (tuple,):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(v, args[0], f"{where}[{i}]") for i, v in enumerate(value))
        if len(args) != len(value):
            raise ConfigError(f"{where}: expected {len(args)} items, got {len(value)}")
        return tuple(_coerce(v, a, f"{where}[{i}]") for i, (a, v) in enumerate(zip(args, value)))
    if origin in (dict, Mapping):
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        key_type, value_type = args or (Any, Any)
        return types.MappingProxyType(
            {_coerce(k, key_type, where): _coerce(v, value_type, f"{where}.{k}") for k, v in value.items()}
        )
    if dataclasses.is_dataclass(annotation):
        return from_mapping(annotation, value, where)
    if annotation is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if annotation is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if annotation is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true/false, got {value!r}")
        return value
    if annotation is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    if annotation is Path:
        if not isinstance(value, (str, Path)):
            raise ConfigError(f"{where}: expected a path, got {value!r}")
        return Path(value)
    raise ConfigError(f"{where}: unsupported annotation {annotation!r}")


def from_mapping(cls: type[T], mapping: Mapping[str, Any] | None, where: str = "config") -> T:
    """Build the frozen dataclass ``cls`` from ``mapping``; unknown keys and bad types raise ConfigError.

    Keys missing from ``mapping`` take the dataclass default (the paper's / sg2im's value).
    """
    if not dataclasses.is_dataclass(cls):
        raise TypeError(f"{cls!r} is not a dataclass")
    mapping = {} if mapping is None else mapping
    if not isinstance(mapping, Mapping):
        raise ConfigError(f"{where}: expected a mapping, got {mapping!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(mapping) - set(fields))
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown}; allowed: {sorted(fields)}")
    kwargs = {}
    for name, field in fields.items():
        if name in mapping:
            kwargs[name] = _coerce(mapping[name], hints[name], f"{where}.{name}")
        elif field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING:
            raise ConfigError(f"{where}: missing required key {name!r}")
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{where}: {exc}") from exc


def from_json(cls: type[T], text: str, where: str = "config") -> T:
    try:
        mapping = json.loads(text) if text.strip() else {}
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{where}: invalid JSON ({exc})") from exc
    return from_mapping(cls, mapping, where)


def load_yaml(path: str | Path) -> dict[str, Any]:
    """A config file as a mapping: YAML (PyYAML), or JSON for a ``.json`` file (JSON is YAML; reading it with the
    standard library lets a machine without PyYAML, e.g. a GPU node with only the PyTorch stack, read configs
    exported by ``python -m retrievegan.config export``)."""
    with open(path, encoding="utf-8") as handle:
        if str(path).endswith(".json"):
            data = json.load(handle)
        else:
            import yaml

            data = yaml.safe_load(handle)
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the config must be a mapping")
    return data


def merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """Recursive merge as Snakemake does for ``--configfile`` layers (override wins)."""
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def export_json(paths: list[str], out_dir: str | Path) -> list[Path]:
    """Write ``<out_dir>/<name>.json`` for each YAML config (``python -m retrievegan.config export OUT YAML...``)."""
    out = []
    for path in paths:
        target = Path(out_dir) / (Path(path).stem + ".json")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(json.dumps(load_yaml(path), indent=1, sort_keys=True) + "\n", encoding="utf-8")
        out.append(target)
    return out


if __name__ == "__main__":
    import sys

    if len(sys.argv) < 4 or sys.argv[1] != "export":
        raise SystemExit("usage: python -m retrievegan.config export OUT_DIR CONFIG.yaml [...]")
    for written in export_json(sys.argv[3:], sys.argv[2]):
        print(written)
