"""May this user train here? Asked of the tracking server before a training, not answered by a 403 after it.

A shared server (docs/SERVER.md) gives the team EDIT on the ``persondet`` experiment and registered model.
A user without it would otherwise train for hours and fail when logging or registering; ``check_may_train``
probes the same permissions first: it deletes a tag that is never set, a write that needs EDIT just as
logging a run or creating a model version does, and changes nothing.
"""

from __future__ import annotations

import os

from persondet.distributed import is_main_process
from persondet.errors import PersondetError
from persondet.tracking.runs import launcher_run_pending
from persondet.tracking.store import DEFAULT_EXPERIMENT, client, tracking_error, tracking_uri

PREFLIGHT_TAG = "persondet.preflight-probe"  # never set: deleting it changes nothing


def check_may_train(registered_name: str | None) -> None:
    """A one-line PersondetError now when this user may not log runs to the experiment or register versions of
    ``registered_name`` (None: not registering). A no-op on local stores, on ranks > 0, for a run ``mlflow run``
    already created, and for names not created yet."""
    if not is_main_process():
        return
    uri = tracking_uri()
    if not uri.startswith(("http://", "https://")):
        return
    from mlflow.exceptions import MlflowException

    c = client()
    probes = []
    if not launcher_run_pending():  # else the run exists: mlflow run created it
        name = os.environ.get("MLFLOW_EXPERIMENT_NAME") or DEFAULT_EXPERIMENT
        probes.append((f"log runs to the experiment {name!r}", lambda: c.get_experiment_by_name(name),
                       lambda e: c.delete_experiment_tag(e.experiment_id, PREFLIGHT_TAG)))
    if registered_name:
        probes.append((f"register versions of the model {registered_name!r}", lambda: registered_name,
                       lambda n: c.delete_registered_model_tag(n, PREFLIGHT_TAG)))
    user = os.environ.get("MLFLOW_TRACKING_USERNAME") or "this user"
    for what, find, probe in probes:
        try:
            target = find()
            if target is not None:
                probe(target)
        except MlflowException as exc:
            if exc.error_code == "RESOURCE_DOES_NOT_EXIST":  # the tag (allowed) or the name (created later)
                continue
            status = exc.get_http_status_code()
            if status == 401 or exc.error_code == "UNAUTHENTICATED":
                raise PersondetError(f"the tracking server {uri} refused the credentials of {user} "
                                     "(MLFLOW_TRACKING_USERNAME, MLFLOW_TRACKING_PASSWORD)") from None
            if status == 403 or exc.error_code == "PERMISSION_DENIED":
                raise PersondetError(
                    f"{user} may not {what} on {uri} (needs EDIT; nothing was trained): ask the server's admin "
                    "to add the account to the team (docs/SERVER.md)"
                    + (" or train with register=false" if "model" in what else "")) from None
            raise tracking_error(exc) from None
        except Exception as exc:  # noqa: BLE001 - a requests error: the server is away
            raise tracking_error(exc) from None
