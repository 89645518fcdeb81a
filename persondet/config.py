"""Frozen, validated configuration for every step.

One name per idea: the command-line flag ``--batch-size``, the dataclass field ``batch_size`` and the
logged MLflow parameter ``batch_size`` are the same setting.  ``to_params()`` returns exactly what is
logged.  MLflow compares parameter values as strings, so a field that the user typed keeps the string the
user typed (``raw``) and ``to_params`` logs that string rather than a re-formatted number.

Each step owns its own class here; the shared machinery is ``ConfigBase``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Mapping

from persondet.errors import PersondetError

MIXES = ("coco", "cuhk", "coco+cuhk")
CUHK_SPLITS = ("all", "train", "test")


class ConfigError(PersondetError, ValueError):
    """A configuration value is invalid; the message names the setting and the value."""


@dataclass(frozen=True)
class ConfigBase:
    # Strings as the user typed them (name -> text), so logged params match what was passed.
    raw: Mapping[str, str] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:  # overridden by each step
        pass

    def to_params(self) -> dict[str, str]:
        params: dict[str, str] = {}
        for f in dataclasses.fields(self):
            if f.name == "raw" or f.metadata.get("log") is False:
                continue
            value = getattr(self, f.name)
            params[f.name] = self.raw.get(f.name, _as_text(value))
        return params

    @classmethod
    def from_strings(cls, values: Mapping[str, str | None]) -> "ConfigBase":
        """Build from command-line strings, converting to each field's type and remembering the text."""
        kwargs: dict[str, Any] = {}
        raw: dict[str, str] = {}
        types = {f.name: f for f in dataclasses.fields(cls)}
        for name, text in values.items():
            if name not in types:
                raise ConfigError(f"unknown setting {name!r} for {cls.__name__}")
            if text is None:
                continue
            kwargs[name] = _convert(name, text, types[name])
            if isinstance(text, str):
                raw[name] = text
        return cls(raw=raw, **kwargs)


def _as_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return ""
    if isinstance(value, (tuple, list)):
        return ",".join(_as_text(v) for v in value)
    return str(value)


def _convert(name: str, text: Any, f: dataclasses.Field) -> Any:
    if not isinstance(text, str):
        return text
    kind = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))
    kind = kind.replace(" ", "")
    try:
        if kind in ("int",):
            return int(text)
        if kind in ("float",):
            return float(text)
        if kind in ("float|None", "Optional[float]"):
            return None if text.strip().lower() in ("", "none", "auto") else float(text)
        if kind in ("int|None", "Optional[int]"):
            return None if text.strip().lower() in ("", "none", "auto") else int(text)
        if kind == "bool":
            lowered = text.strip().lower()
            if lowered in ("1", "true", "yes", "on"):
                return True
            if lowered in ("0", "false", "no", "off", ""):
                return False
            raise ValueError(text)
    except ValueError:
        raise ConfigError(f"{name}={text!r} is not a valid {kind}") from None
    return text


def require(condition: bool, message: str) -> None:
    if not condition:
        raise ConfigError(message)


@dataclass(frozen=True)
class PrepareConfig(ConfigBase):
    coco_root: str = ""  # empty: the built-in demo data
    cuhk_root: str = ""  # empty: the built-in demo data
    mix: str = "coco+cuhk"
    cuhk_split: str = "all"
    coco_split: str = "train2017"
    output_dir: str = field(default="", metadata={"log": False})
    check_images: int = 4  # annotation check images drawn per source
    demo_seed: int = 0

    def validate(self) -> None:
        require(self.mix in MIXES, f"mix={self.mix!r} must be one of {', '.join(MIXES)}")
        require(self.cuhk_split in CUHK_SPLITS,
                f"cuhk_split={self.cuhk_split!r} must be one of {', '.join(CUHK_SPLITS)}")
        require(self.check_images >= 0, f"check_images={self.check_images} must be >= 0")
