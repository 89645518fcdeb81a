"""Typed configuration fields: declared once with their help, converted from the text the user typed.

A step's configuration is a frozen dataclass of ``ConfigBase`` whose fields are declared with
``setting(default, "help")``.  The field's type hint picks the conversion from command-line text:

- ``str``: as typed; ``int``, ``float``: Python's literals (``2e-2``); ``Path``: a non-empty path;
- ``bool``: true/false, yes/no, on/off, 1/0 (empty is false);
- ``X | None``: empty, ``none`` or ``auto`` is None, anything else an X; the field's word for None
  (``setting(..., none="auto")``, the default word) is what help, docs and ``to_params`` show;
- ``tuple[X, ...]`` / ``list[X]``: comma-separated X (``"8,16"``), blanks around items ignored;
- ``Literal[...]``: one of the listed strings, and the error lists them.

MLflow compares parameter values as strings, so the text the user typed is kept (``raw``) and logged
as typed (``lr=2e-2`` logs ``2e-2``); a value nobody typed is logged in its canonical text.  Every
conversion failure is one ``ConfigError`` line naming the field and the value.
"""

from __future__ import annotations

import dataclasses
import functools
import types
import typing
from dataclasses import dataclass, field
from pathlib import PurePath
from typing import Any, Literal, Mapping, Union

from persondet.errors import PersondetError

NONE_WORDS = ("", "none", "auto")
TRUE_WORDS = ("1", "true", "yes", "on")
FALSE_WORDS = ("0", "false", "no", "off", "")


class ConfigError(PersondetError, ValueError):
    """A configuration value is invalid; the message names the setting and the value."""


def setting(default: Any, help: str, *, none: str = "auto", required: bool = False, log: bool = True) -> Any:
    """A config field with its help text (shown by ``--help`` and docs/PARAMETERS.md).

    ``none``: the word shown and logged for None; ``required``: the step needs a non-empty value (the
    help says what to give); ``log=False``: a local setting that ``to_params`` leaves out."""
    return field(default=default, metadata={"help": help, "none": none, "required": required, "log": log})


def require(condition: bool, message: str) -> None:
    if not condition:
        raise ConfigError(message)


class _Invalid(ValueError):
    """A text that does not convert; the message is what follows ``name='text'`` (`` is not a valid int``)."""


def _optional_inner(hint: Any) -> Any | None:
    """X for ``X | None`` (or ``Optional[X]``), else None."""
    if typing.get_origin(hint) in (Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(args) == 1 and len(typing.get_args(hint)) == 2:
            return args[0]
        raise TypeError(f"unsupported config type {hint}: only X | None unions")
    return None


def _sequence_item(hint: Any) -> Any | None:
    """X for ``tuple[X, ...]`` or ``list[X]``, else None."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is list and len(args) == 1:
        return args[0]
    if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
        return args[0]
    if origin in (list, tuple):
        raise TypeError(f"unsupported config type {hint}: use tuple[X, ...] or list[X]")
    return None


def type_text(hint: Any, none: str = "auto") -> str:
    """How a type reads in ``--help`` and the docs: ``int``, ``float|auto``, ``int,...``, ``none|bf16|fp16``."""
    inner = _optional_inner(hint)
    if inner is not None:
        return f"{type_text(inner)}|{none or 'empty'}"
    item = _sequence_item(hint)
    if item is not None:
        return f"{type_text(item)},..."
    if typing.get_origin(hint) is Literal:
        return "|".join(str(a) for a in typing.get_args(hint))
    if isinstance(hint, type) and issubclass(hint, PurePath):
        return "path"
    return {str: "text", int: "int", float: "float", bool: "bool"}.get(hint, getattr(hint, "__name__", str(hint)))


def _from_text(text: str, hint: Any, none: str) -> Any:
    inner = _optional_inner(hint)
    if inner is not None:
        if text.strip().lower() in NONE_WORDS:
            return None
        try:
            return _from_text(text, inner, none)
        except _Invalid as exc:
            raise _Invalid(f"{exc} or {none or 'empty'}") from None
    item = _sequence_item(hint)
    if item is not None:
        values = []
        for part in (p.strip() for p in text.split(",")):
            if part:
                try:
                    values.append(_from_text(part, item, none))
                except _Invalid as exc:
                    raise _Invalid(f": {part!r}{exc}") from None  # batch_sizes='8,x': 'x' is not a valid int
        return list(values) if typing.get_origin(hint) is list else tuple(values)
    if typing.get_origin(hint) is Literal:
        choices = typing.get_args(hint)
        if text not in choices:
            raise _Invalid(f" must be one of {', '.join(map(str, choices))}")
        return text
    if hint is bool:
        word = text.strip().lower()
        if word in TRUE_WORDS or word in FALSE_WORDS:
            return word in TRUE_WORDS
        raise _Invalid(" is not a valid bool (true/false, yes/no, 1/0)")
    if hint in (int, float):
        try:
            return hint(text)
        except ValueError:
            raise _Invalid(f" is not a valid {hint.__name__}") from None
    if isinstance(hint, type) and issubclass(hint, PurePath):
        if not text.strip():
            raise _Invalid(" is not a valid path")
        return hint(text)
    if hint is str:
        return text
    raise TypeError(f"unsupported config type {hint}")


def convert(name: str, text: str, hint: Any, none: str = "auto") -> Any:
    """The value of field ``name`` typed as ``text``; a one-line ConfigError naming both otherwise."""
    try:
        return _from_text(text, hint, none)
    except _Invalid as exc:
        raise ConfigError(f"{name}={text!r}{exc}") from None


def as_text(value: Any, none: str = "auto") -> str:
    """The canonical text of a value (what ``to_params`` logs when nobody typed it)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return none
    if isinstance(value, (tuple, list)):
        return ",".join(as_text(v, none) for v in value)
    return str(value)


@functools.cache
def field_types(cls: type) -> dict[str, Any]:
    """Each config field's resolved type hint (the annotations are strings under ``from __future__``)."""
    return typing.get_type_hints(cls)


def config_fields(cls: type) -> list[dataclasses.Field]:
    """The settings of a config class, in declaration order (``raw`` is bookkeeping, not a setting)."""
    return [f for f in dataclasses.fields(cls) if f.name != "raw"]


def default_text(f: dataclasses.Field) -> str:
    """The default as a command-line text (``auto``, ``8,16``, ``true``); MLproject defaults equal it."""
    default = f.default_factory() if f.default is dataclasses.MISSING else f.default
    return as_text(default, f.metadata.get("none", "auto"))


@dataclass(frozen=True)
class ConfigBase:
    # Strings as the user typed them (name -> text), so logged params match what was passed.
    raw: Mapping[str, str] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        hints = field_types(type(self))
        raw = dict(self.raw)
        for f in config_fields(type(self)):
            value, hint = getattr(self, f.name), hints[f.name]
            if isinstance(value, str) and hint is not str:
                # A text for a typed field (command line, MLproject, or a test): convert it, remember it.
                object.__setattr__(self, f.name, convert(f.name, value, hint, f.metadata.get("none", "auto")))
                raw.setdefault(f.name, value)
            elif isinstance(value, list) and typing.get_origin(hint) is tuple:
                object.__setattr__(self, f.name, tuple(value))  # e.g. a config that travelled as JSON
        object.__setattr__(self, "raw", raw)
        for f in config_fields(type(self)):
            if f.metadata.get("required"):
                require(bool(str(getattr(self, f.name) or "").strip()), f"{f.name} is required: {f.metadata['help']}")
        self.validate()

    def validate(self) -> None:  # overridden by each step
        pass

    def text(self, name: str) -> str:
        """The text of setting ``name``: as typed, else the canonical text of its value."""
        if name in self.raw:
            return self.raw[name]
        f = next(f for f in config_fields(type(self)) if f.name == name)
        return as_text(getattr(self, name), f.metadata.get("none", "auto"))

    def to_params(self) -> dict[str, str]:
        """The MLflow parameters of this config: every logged setting as text."""
        return {f.name: self.text(f.name) for f in config_fields(type(self)) if f.metadata.get("log", True)}

    @classmethod
    def from_strings(cls, values: Mapping[str, str | None]) -> "ConfigBase":
        """Build from command-line strings (None: not given), converting to each field's type and
        remembering the text."""
        names = {f.name for f in config_fields(cls)}
        for name in values:
            if name not in names:
                raise ConfigError(f"unknown setting {name!r} for {cls.__name__}")
        return cls(**{name: text for name, text in values.items() if text is not None})
