"""Hydra's and OmegaConf's composition errors as the one line every config error is:
`key: value is invalid; accepted: ...`, or `unknown group option 'gpuu' for trainer;
available: cpu, ddp, ...`.

Hydra reports a typo or a wrong type in several lines, often without what would be
accepted; here the schema (the dataclasses) says what is. `HYDRA_FULL_ERROR=1` still gets
Hydra's own report (train.py then leaves the error to Hydra).
"""

from __future__ import annotations

import dataclasses
import difflib
import re
import typing
from typing import Any, Iterable, List, Optional, Sequence

from dimba.errors import ConfigError

BASE_PREFIX = "base_"  # the schemas' ConfigStore names: not options a user picks
_MERGING = re.compile(r"Error merging override (?P<key>[^=]+)=(?P<value>.*)", re.S)
_MISSING_OPTION = re.compile(r"Could not find '(?P<group>[^']+)/(?P<option>[^'/]+)'")
_UNKNOWN = re.compile(r"Could not override '(?P<key>[^']+)'")
_ALREADY = re.compile(r"An item is already at '(?P<key>[^']+)'")
_AMBIGUOUS = re.compile(r"Ambiguous value for argument '(?P<key>[^=]+)=(?P<value>[^']*)'")


def unknown_option(group: str, option: str, available: Sequence[str]) -> ConfigError:
    """A group option that does not exist (or is a schema's internal `base_*` name)."""
    return ConfigError(group, option, ", ".join(available),
                       line=f"unknown group option {option!r} for {group}; available: {', '.join(available)}"
                            f"{_suggestion(option, available)}")


def visible(options: Iterable[str]) -> List[str]:
    return sorted(o for o in options if not o.startswith(BASE_PREFIX))


def _suggestion(word: str, candidates: Sequence[str]) -> str:
    close = difflib.get_close_matches(word, list(candidates), n=1)
    return f" (did you mean {close[0]}?)" if close else ""


def field_type(schema: Any, dotted: str) -> Any:
    """The annotation of `dotted` (a.b.c, list positions skipped) in the dataclass `schema`.
    A field typed Any whose group has several schemas (`data`) is looked up in each."""
    current: Any = schema
    parts = dotted.split(".")
    for index, part in enumerate(parts):
        current = _element(current)
        if current is Any and index and ".".join(parts[:index]) in ALTERNATIVES:
            found = [field_type(alt, ".".join(parts[index:])) for alt in ALTERNATIVES[".".join(parts[:index])]()]
            return next((f for f in found if f is not None), None)
        if not (dataclasses.is_dataclass(current) and isinstance(current, type)):
            return None
        hints = typing.get_type_hints(current)
        if part not in hints:
            return None
        current = hints[part]
    return current


def _data_schemas() -> tuple:
    from dimba.data.config import DataConfig, ShardsDataConfig

    return DataConfig, ShardsDataConfig


ALTERNATIVES = {"data": _data_schemas}  # groups whose field in Config is typed Any


def _element(tp: Any) -> Any:
    """List[X] -> X, Optional[X] -> X: what the next key part indexes into."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (list, List, Sequence) and args:
        return _element(args[0])
    if origin is typing.Union:
        rest = [a for a in args if a is not type(None)]
        return _element(rest[0]) if len(rest) == 1 else tp
    return tp


def accepted_for(tp: Any, key: str) -> str:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is typing.Union:
        rest = [a for a in args if a is not type(None)]
        inner = accepted_for(rest[0], key) if len(rest) == 1 else "a value of the right type"
        return f"{inner}, or null" if type(None) in args else inner
    if origin in (list, List):
        return f"a list in brackets, e.g. {key}=[a,b] (a single item too: {key}=[a])"
    if tp is bool:
        return "true or false"
    if tp is int:
        return "an integer"
    if tp is float:
        return "a number"
    if tp is str:
        return "a string"
    if dataclasses.is_dataclass(tp):
        return f"a mapping of {tp.__name__}'s keys: {', '.join(f.name for f in dataclasses.fields(tp))}"
    return "a value of the right type"


def composition_error(exc: BaseException, schema: Any, groups: Sequence[str],
                      options: Optional[Any] = None) -> ConfigError:
    """Hydra's exception while composing, as one ConfigError. `options(group)` lists a group's
    options (for a missing one); `groups` are the config groups (for a misspelt one)."""
    text = str(exc)
    cause = exc.__cause__
    found = _MISSING_OPTION.search(text)
    if found:
        group, option = found.group("group"), found.group("option")
        return unknown_option(group, option, visible(options(group)) if options else [])
    found = _AMBIGUOUS.search(text)
    if found:
        key, value = found.group("key").lstrip("+~"), found.group("value")
        return ConfigError(key, value, f"a list in brackets, {key}=[{value}] (or quoted text: {key}='{value}'); "
                                       "to sweep over the values, add --multirun")
    found = _ALREADY.search(text)
    if found:
        key = found.group("key")
        return ConfigError(key, f"+{key}", "", line=f"{key} is already a key of the config: set it without '+' "
                                                     f"({key}=...), or with '++' to add or override")
    found = _UNKNOWN.search(text)
    if found:
        return _unknown_key(found.group("key"), schema, groups)
    found = _MERGING.search(text)
    if found:
        key, value = found.group("key").lstrip("+~"), found.group("value")
        inner = getattr(cause, "full_key", None) or key
        full = inner if inner.startswith(key) else f"{key}[...].{inner}"
        bad = getattr(cause, "value", value)
        return ConfigError(full, bad, accepted_for(field_type(schema, full.replace("[...]", "")), key))
    first = text.strip().splitlines()[0] if text.strip() else type(exc).__name__
    return ConfigError("command line", first, "overrides of the form key=value, group=option or +key=value "
                                              "(see https://hydra.cc/docs/advanced/override_grammar/basic/)")


def _unknown_key(key: str, schema: Any, groups: Sequence[str]) -> ConfigError:
    parent, _, name = key.rpartition(".")
    tp = field_type(schema, parent) if parent else schema
    tp = _element(tp)
    if tp is Any and parent in ALTERNATIVES:
        tp = ALTERNATIVES[parent]()[0]
    keys = [f.name for f in dataclasses.fields(tp)] if dataclasses.is_dataclass(tp) else []
    if parent:
        line = f"unknown key {key!r}; {parent} has: {', '.join(keys)}{_suggestion(name, keys)}"
    else:
        line = (f"unknown config group or key {key!r}; groups: {', '.join(sorted(groups))}; keys: {', '.join(keys)}"
                f"{_suggestion(name, keys + list(groups))}")
    return ConfigError(key, name, ", ".join(keys), line=line)
