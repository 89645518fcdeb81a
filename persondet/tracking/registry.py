"""The model registry: registered versions, aliases, stages and version tags."""

from __future__ import annotations

from typing import Any, Mapping

from persondet.model_names import REGISTERED_MODEL
from persondet.tracking.store import client


def model_versions(name: str = REGISTERED_MODEL) -> list:
    """Every version of a registered model (empty when the model is not registered)."""
    try:
        return list(client().search_model_versions(f"name = '{name}'", max_results=10000))
    except Exception:  # noqa: BLE001
        return []


def version_by_alias(name: str, alias: str):
    """The version ``alias`` points at, or None."""
    try:
        return client().get_model_version_by_alias(name, alias)
    except Exception:  # noqa: BLE001
        return None


def promote_version(name: str, version: str, alias: str, stage: str, tags: Mapping[str, Any]) -> None:
    """Move a version to ``stage`` (archiving the others there), point ``alias`` at it and tag it."""
    import warnings

    c = client()
    with warnings.catch_warnings():  # stages are deprecated in MLflow; the study's users still ask for them
        warnings.simplefilter("ignore", FutureWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        c.transition_model_version_stage(name, version, stage, archive_existing_versions=True)
    c.set_registered_model_alias(name, alias, version)
    set_version_tags(name, version, tags)


def set_version_tags(name: str, version: str, tags: Mapping[str, Any]) -> None:
    """Set tags on one model version (values as strings)."""
    c = client()
    for key, value in tags.items():
        c.set_model_version_tag(name, version, key, str(value))


def training_run_of(model_uri: str) -> str | None:
    """The id of the run that logged the model behind ``model_uri`` (None when unknown)."""
    if model_uri.startswith("runs:/"):
        return model_uri[len("runs:/"):].split("/", 1)[0] or None
    if model_uri.startswith("models:/"):
        rest = model_uri[len("models:/"):].strip("/")
        try:
            if "@" in rest:
                name, alias = rest.split("@", 1)
                version = client().get_model_version_by_alias(name, alias)
            else:
                name, number = rest.split("/", 1)
                version = client().get_model_version(name, number)
        except Exception:  # noqa: BLE001
            return None
        return version.run_id or (version.tags or {}).get("training_run_id")
    return None
