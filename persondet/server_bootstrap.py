"""The tracking server's bootstrap (``persondet.server init``): who may do what, set before anyone can log in.

- The admin (MLFLOW_AUTH_ADMIN_USERNAME) exists with the configured password: the secret is the truth, so
  changing it and restarting rotates the admin password.
- The team (PERSONDET_TEAM_FILE; one ``username`` or ``username:initial password`` a line, ``#`` comments)
  exists: missing members are created with their initial password (members change it themselves later).
- The ``persondet`` experiment and ``persondet`` registered model exist, created here by the server (no
  user owns them, the admin can do anything), so nobody can squat the names before the team uses them.
- On those two, every team member has EDIT (run, log, register versions) and nobody else (except admins)
  has any grant: their permission is the server's default, READ. The file is the truth on each start.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

from persondet.errors import PersondetError
from persondet.model_names import REGISTERED_MODEL as REGISTERED_MODEL_NAME
from persondet.tracking.store import DEFAULT_EXPERIMENT as EXPERIMENT_NAME
from persondet.tracking.store import EXPERIMENT_KIND, EXPERIMENT_KIND_TAG

TEAM_PERMISSION = "EDIT"


@dataclass(frozen=True)
class Member:
    username: str
    password: str | None = field(default=None, repr=False)  # only used to create a missing user


def read_team(path: str) -> list[Member]:
    """The members listed in ``path``; a malformed line is a one-line error naming it."""
    from persondet.server import MIN_PASSWORD_LENGTH

    try:
        lines = Path(path).read_text().splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise PersondetError(f"team file {path}: cannot read it ({getattr(exc, 'strerror', None) or exc})") from None
    members: dict[str, Member] = {}
    for number, line in enumerate(lines, 1):
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        username, colon, password = text.partition(":")
        username = username.strip()
        where = f"team file {path} line {number}"
        if not username or any(c.isspace() for c in username):
            raise PersondetError(f"{where}: expected 'username' or 'username:initial password'")
        if colon and len(password) < MIN_PASSWORD_LENGTH:
            raise PersondetError(f"{where}: the password of {username!r} has {len(password)} characters: MLflow "
                                 f"requires at least {MIN_PASSWORD_LENGTH}")
        if username in members:
            raise PersondetError(f"{where}: {username!r} is listed twice")
        members[username] = Member(username, password if colon else None)
    return list(members.values())


def _missing(exc: Exception) -> bool:
    return getattr(exc, "error_code", None) == "RESOURCE_DOES_NOT_EXIST"


def _set_permission(auth, kind: str, resource: str, username: str, permission: str | None) -> None:
    """Make ``username``'s grant on the resource ``permission`` (None: no grant of its own)."""
    from mlflow.exceptions import MlflowException

    get = getattr(auth, f"get_{kind}_permission")
    try:
        current = get(resource, username).permission
    except MlflowException as exc:
        if not _missing(exc):
            raise
        current = None
    if current == permission:
        return
    if permission is None:
        getattr(auth, f"delete_{kind}_permission")(resource, username)
    elif current is None:
        getattr(auth, f"create_{kind}_permission")(resource, username, permission)
    else:
        getattr(auth, f"update_{kind}_permission")(resource, username, permission)


def _ensure_users(auth, admin: str, admin_password: str, team: list[Member]) -> None:
    if not auth.has_user(admin):
        auth.create_user(admin, admin_password, is_admin=True)
        print(f"persondet: created the admin {admin!r}", file=sys.stderr, flush=True)
    else:
        if not auth.authenticate_user(admin, admin_password):
            auth.update_user(admin, password=admin_password)
            print(f"persondet: the admin {admin!r} has the configured password now", file=sys.stderr, flush=True)
        if not auth.get_user(admin).is_admin:
            auth.update_user(admin, is_admin=True)
    for member in team:
        if auth.has_user(member.username):
            continue
        if member.password is None:
            raise PersondetError(f"team member {member.username!r} does not exist: give an initial password in "
                                 f"the team file ({member.username}:<at least 12 characters>)")
        auth.create_user(member.username, member.password, is_admin=False)
        print(f"persondet: created the team member {member.username!r}", file=sys.stderr, flush=True)


def _ensure_names(backend_uri: str) -> str:
    """The ``persondet`` experiment (restored if deleted) and registered model; returns the experiment id."""
    from mlflow.entities import ExperimentTag, LifecycleStage
    from mlflow.exceptions import MlflowException
    from mlflow.store.model_registry.sqlalchemy_store import SqlAlchemyStore as RegistryStore
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore as TrackingStore
    from mlflow.utils.server_cli_utils import resolve_default_artifact_root

    # The artifact root `mlflow server --serve-artifacts` gives the experiments it creates.
    tracking = TrackingStore(backend_uri, resolve_default_artifact_root(True, None, backend_uri))
    experiment = tracking.get_experiment_by_name(EXPERIMENT_NAME)
    kind = ExperimentTag(EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)
    if experiment is None:
        experiment_id = tracking.create_experiment(EXPERIMENT_NAME, tags=[kind])
        print(f"persondet: created the experiment {EXPERIMENT_NAME!r}", file=sys.stderr, flush=True)
    else:
        experiment_id = experiment.experiment_id
        if experiment.lifecycle_stage == LifecycleStage.DELETED:
            tracking.restore_experiment(experiment_id)
        if EXPERIMENT_KIND_TAG not in experiment.tags:
            tracking.set_experiment_tag(experiment_id, kind)
    registry = RegistryStore(backend_uri)
    try:
        registry.get_registered_model(REGISTERED_MODEL_NAME)
    except MlflowException as exc:
        if not _missing(exc):
            raise
        registry.create_registered_model(REGISTERED_MODEL_NAME, description="persondet person detectors")
        print(f"persondet: created the registered model {REGISTERED_MODEL_NAME!r}", file=sys.stderr, flush=True)
    return str(experiment_id)


def bootstrap(settings, team: list[Member]) -> None:
    """Users, the two names and the team's grants (see the module docstring); idempotent."""
    from mlflow.exceptions import MlflowException
    from mlflow.server.auth.sqlalchemy_store import SqlAlchemyStore as AuthStore

    from persondet.server import with_password

    try:
        auth = AuthStore()
        auth.init_db(with_password(settings.auth_database_uri, settings.auth_password))
        _ensure_users(auth, settings.admin_username, settings.admin_password, team)
        experiment_id = _ensure_names(with_password(settings.backend_store_uri, settings.backend_password))
        members = {m.username for m in team}
        for user in auth.list_users():
            if user.is_admin:
                continue
            grant = TEAM_PERMISSION if user.username in members else None
            _set_permission(auth, "experiment", experiment_id, user.username, grant)
            _set_permission(auth, "registered_model", REGISTERED_MODEL_NAME, user.username, grant)
    except MlflowException as exc:
        raise PersondetError(f"bootstrap of the tracking server failed: {' '.join(exc.message.split())[:300]}") \
            from None
    print(f"persondet: team {sorted(members)} has {TEAM_PERMISSION} on the experiment and registered model "
          f"{EXPERIMENT_NAME!r}", file=sys.stderr, flush=True)
