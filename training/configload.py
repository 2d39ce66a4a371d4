"""Reading configs: YAML files (``base:`` includes), dotted ``--set`` overrides, and building a
typed dataclass from a nested dict with one-sentence errors.

Generic over the schema: nothing here imports ``training.config``; ``training.config.from_dict``
calls :func:`build` with its ``Config``. A key that the schema does not know is an error naming
the valid keys of that section, so a typo never silently trains with a default.
"""
from __future__ import annotations

import dataclasses
import os
import types
import typing
from typing import Any

import yaml

from .errors import ConfigError


def field_types(cls) -> dict:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Check/convert one scalar against the annotated type; raise ConfigError when impossible."""
    origin = typing.get_origin(tp)
    if origin is typing.Union or origin is types.UnionType:
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None:
            return None
        return _coerce(value, args[0], where)
    if tp is Any:
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{where} must be true or false, got {value!r}.")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise ConfigError(f"{where} must be an integer, got {value!r}.")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            # PyYAML (YAML 1.1) reads "2e-3" as a string; accept it as the number it means.
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(f"{where} must be a number, got {value!r}.")
    if tp is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(f"{where} must be a string, got {value!r}.")
    if tp is dict or origin is dict:
        if isinstance(value, dict):
            return dict(value)
        raise ConfigError(f"{where} must be a mapping, got {value!r}.")
    if tp is list or origin is list:
        if isinstance(value, (list, tuple)):
            return list(value)
        raise ConfigError(f"{where} must be a list, got {value!r}.")
    return value


def build(cls, data: dict, where: str = ""):
    """An instance of the dataclass ``cls`` from a (possibly partial) nested dict; missing keys
    take the defaults, nested dataclass fields are built from nested dicts."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where or 'the config'} must be a mapping of keys to values, got {data!r}.")
    types_ = field_types(cls)
    kwargs = {}
    for key, value in data.items():
        if key not in types_:
            valid = ", ".join(types_)
            raise ConfigError(
                f"Unknown config key '{where + '.' if where else ''}{key}'; "
                f"valid keys of {where or 'the top level'} are: {valid}.")
        tp = types_[key]
        sub = f"{where}.{key}" if where else key
        if dataclasses.is_dataclass(tp):
            kwargs[key] = build(tp, value if value is not None else {}, sub)
        else:
            kwargs[key] = _coerce(value, tp, sub)
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as e:  # a section's own __post_init__ checks
        raise ConfigError(str(e).rstrip(".") + ".") from None




def deep_merge(base: dict, over: dict) -> dict:
    # Nested dicts are copied, never shared: overrides are applied to the result in place and
    # must not reach into the caller's dict (e.g. the config stored in a checkpoint).
    out = {k: deep_merge({}, v) if isinstance(v, dict) else v for k, v in base.items()}
    for k, v in over.items():
        if isinstance(v, dict):
            out[k] = deep_merge(out[k] if isinstance(out.get(k), dict) else {}, v)
        else:
            out[k] = v
    return out


class _AliasFound(Exception):
    pass


class YAMLAliasError(ConfigError):
    """User YAML that uses an alias (refused, see _NoAliasLoader)."""


class _NoAliasLoader(yaml.SafeLoader):
    """yaml.SafeLoader without aliases (``*name``): a few hundred bytes of nested aliases expand
    to gigabytes (a "billion laughs"), and a config has no need of them."""

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            raise _AliasFound(self.peek_event().start_mark)
        return super().compose_node(parent, index)


def _yaml_where(mark) -> str:
    return f"line {mark.line + 1}, column {mark.column + 1}" if mark is not None else "somewhere"


def load_yaml_text(text: str, where: str):
    """Parse user YAML (a config file, a --set value) without aliases; errors are one sentence
    that starts with ``where``."""
    loader = _NoAliasLoader(text)
    try:
        return loader.get_single_data()
    except _AliasFound as e:
        raise YAMLAliasError(f"{where} uses a YAML alias at {_yaml_where(e.args[0])}; aliases are not "
                          f"allowed in configs (they can expand without bound), write the values "
                          f"out.") from None
    except yaml.MarkedYAMLError as e:
        raise ConfigError(f"{where} is not valid YAML ({e.problem or e.context} at "
                          f"{_yaml_where(e.problem_mark or e.context_mark)}).") from None
    except yaml.YAMLError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ConfigError(f"{where} is not valid YAML ({first}).") from None
    finally:
        loader.dispose()


def read_yaml(path: str, _seen: tuple = ()) -> dict:
    path = os.path.abspath(path)
    if path in _seen:
        raise ConfigError(f"Config file {path} includes itself through 'base:'; remove the cycle.")
    if not os.path.isfile(path):
        raise ConfigError(f"Config file {path} does not exist; pass an existing YAML file to --config.")
    with open(path, "rb") as f:
        raw = f.read()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise ConfigError(f"Config file {path} is not UTF-8 text (byte 0x{raw[e.start]:02x} at offset "
                          f"{e.start}); save it as UTF-8.") from None
    data = load_yaml_text(text, f"Config file {path}") or {}
    if not isinstance(data, dict):
        raise ConfigError(f"Config file {path} must hold a mapping of sections, not {type(data).__name__}.")
    base = data.pop("base", None)
    if base:
        base_path = base if os.path.isabs(base) else os.path.join(os.path.dirname(path), base)
        data = deep_merge(read_yaml(base_path, _seen + (path,)), data)
    return data


def parse_override(text: str) -> tuple[list[str], Any]:
    """'loss.lambda_id=0.1' -> (['loss', 'lambda_id'], 0.1); the value is a YAML scalar."""
    if "=" not in text:
        raise ConfigError(f"Override '{text}' must look like section.key=value (e.g. loss.lambda_id=0.1).")
    key, raw = text.split("=", 1)
    keys = [k for k in key.strip().split(".") if k]
    if not keys:
        raise ConfigError(f"Override '{text}' has no key before '='.")
    try:
        value = load_yaml_text(raw, f"Override '{text}'") if raw.strip() != "" else ""
    except YAMLAliasError:
        raise
    except ConfigError:
        value = raw
    return keys, value


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    """Apply dotted overrides to a nested dict (validated later by from_dict)."""
    data = deep_merge({}, data)
    for text in overrides or []:
        keys, value = parse_override(text)
        node = data
        for k in keys[:-1]:
            if not isinstance(node.get(k), dict):
                node[k] = {} if node.get(k) is None else node[k]
                if not isinstance(node[k], dict):
                    raise ConfigError(f"Override '{text}': '{k}' is a value, not a section.")
            node = node[k]
        node[keys[-1]] = value
    return data
