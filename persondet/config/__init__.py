"""Frozen, validated configuration for every step.

One name per idea: the command-line flag ``--batch-size``, the dataclass field ``batch_size``, the
MLproject parameter ``batch_size`` and the logged MLflow parameter ``batch_size`` are the same setting.
Each field is declared once, with its type, default and help (``setting``); ``--help`` and
docs/PARAMETERS.md are generated from these declarations.  ``to_params()`` returns exactly what is logged:
the text the user typed (``raw``), else the canonical text of the value.  A class docstring's first
paragraph says what the step does.  Conversion rules: ``persondet.configbase``.
"""

from persondet.config.orchestration import IMAGE_SOURCES, LAUNCH_SETS, LaunchConfig, TuneConfig, parse_train_options
from persondet.config.steps import (AMP_MODES, DECODERS, DEFAULT_MIXES, DEVICES, EvaluateConfig, MainConfig,
                                    PrepareConfig, PromoteConfig, ReportConfig, TrainConfig, parse_source_weights)
from persondet.configbase import ConfigBase, ConfigError, require, setting

__all__ = ["ConfigBase", "ConfigError", "require", "setting", "PrepareConfig", "TrainConfig", "EvaluateConfig",
           "PromoteConfig", "ReportConfig", "MainConfig", "TuneConfig", "ENTRY_POINT_CONFIGS",
           "parse_source_weights", "LaunchConfig", "parse_train_options", "AMP_MODES", "DECODERS", "DEVICES",
           "DEFAULT_MIXES", "IMAGE_SOURCES", "LAUNCH_SETS"]

# The MLproject entry points, in the order a study runs them (docs/PARAMETERS.md follows it).
ENTRY_POINT_CONFIGS: dict[str, type[ConfigBase]] = {
    "prepare": PrepareConfig, "train": TrainConfig, "evaluate": EvaluateConfig, "promote": PromoteConfig,
    "tune": TuneConfig, "report": ReportConfig, "main": MainConfig, "launch": LaunchConfig,
}
