"""The ``promote`` step: the best merged-data version of ``persondet`` becomes the champion.

Eligible: versions trained on merged data (``dataset_mix`` names at least two sources:
``persondet.datasets.is_merged``) whose training run holds ``<test_name>/<metric>`` for the chosen test
set with the same digest (``<test_name>/digest``), which the ``evaluate`` step writes.  Best: the highest metric; on a tie the LOWER (older) version wins, so an
equally good newcomer never displaces a model already deployed.  The best replaces the current champion
only when it is strictly better on the same test set (or the champion is not comparable there): it moves
to stage ``Production`` (archiving the previous one) and the alias ``champion`` points at it.  A second
run with nothing new changes nothing.
"""

from __future__ import annotations

import os
import tempfile
from collections import Counter
from dataclasses import dataclass, field

from persondet.config import PromoteConfig
from persondet.datasets import is_merged
from persondet.errors import PersondetError
from persondet.tracking import open_run, run_name
from persondet.tracking.registry import model_versions, promote_version, set_version_tags, version_by_alias
from persondet.tracking.search import get_run
from persondet.summary import REASON_TAG


@dataclass
class Candidate:
    version: str
    mix: str
    batch_size: str
    stage: str
    training_run_id: str
    evaluations: dict[str, tuple[str, float | None]]  # test_name -> (digest, metric value)
    value: float | None = None
    eligible: bool = False
    reason: str = ""  # why not eligible

    @property
    def verdict(self) -> str:
        """The decision table's cell: ``yes`` or ``no: <reason>``."""
        return "yes" if self.eligible else f"no: {self.reason}"

    @property
    def merged(self) -> bool:
        return is_merged(self.mix)


@dataclass
class PromoteResult:
    decision: str  # "promoted" or "kept"
    champion: str  # the champion version after this run
    test_name: str
    test_digest: str
    metric: str
    rows: list[list[str]] = field(default_factory=list)
    reason: str = ""


def _candidates(config: PromoteConfig) -> list[Candidate]:
    out = []
    for mv in model_versions(config.model_name):
        tags = dict(mv.tags or {})
        run_id = tags.get("training_run_id") or mv.run_id or ""
        run = get_run(run_id) if run_id else None
        params = run.data.params if run else {}
        evaluations: dict[str, tuple[str, float | None]] = {}
        if run:
            for key, digest in run.data.tags.items():
                if key.endswith("/digest"):
                    name = key[: -len("/digest")]
                    evaluations[name] = (digest, run.data.metrics.get(f"{name}/{config.metric}"))
        out.append(Candidate(str(mv.version), tags.get("dataset_mix") or params.get("dataset_mix", "?"),
                             tags.get("batch_size") or params.get("batch_size", "?"),
                             mv.current_stage or "None", run_id, evaluations))
    return sorted(out, key=lambda c: int(c.version))


def _choose_test_set(config: PromoteConfig, candidates: list[Candidate]) -> tuple[str, str]:
    """The (test_name, digest) to compare on: as given, else the one most merged versions share."""
    counts = Counter((name, digest) for c in candidates if c.merged
                     for name, (digest, value) in c.evaluations.items() if value is not None
                     and (not config.test_name or name == config.test_name)
                     and (not config.test_digest or digest == config.test_digest))
    if not counts:
        return config.test_name, config.test_digest
    (name, digest), _ = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[0]
    return name, digest


def _mark(candidates: list[Candidate], test_name: str, digest: str) -> None:
    for c in candidates:
        digest_seen, value = c.evaluations.get(test_name, ("", None))
        if not c.merged:
            c.reason = f"dataset_mix={c.mix} is not merged data"
        elif not test_name or test_name not in c.evaluations:
            c.reason = f"not evaluated on {test_name or 'any test set'}"
        elif digest_seen != digest:
            c.reason = f"evaluated on another {test_name} (digest {digest_seen})"
        elif value is None:
            c.reason = "metric missing"
        c.eligible = not c.reason
        if digest_seen == digest and value is not None:
            c.value = value  # shown in the table even when not eligible


def decision_table(candidates: list[Candidate], metric: str, champion: str, best: str) -> list[list[str]]:
    rows = [["version", "dataset_mix", "batch_size", "stage", metric, "eligible", "role"]]
    for c in candidates:
        role = " ".join(r for r, v in (("champion", champion), ("best", best)) if v == c.version)
        rows.append([c.version, c.mix, c.batch_size, c.stage,
                     "-" if c.value is None else f"{c.value:.4f}", c.verdict, role])
    return rows


def format_table(rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def promote(config: PromoteConfig) -> PromoteResult:
    candidates = _candidates(config)
    if not candidates:
        raise PersondetError(f"registered model {config.model_name!r} has no versions: nothing to promote "
                             "(train a model first)")
    test_name, digest = _choose_test_set(config, candidates)
    _mark(candidates, test_name, digest)
    eligible = [c for c in candidates if c.eligible]
    if not eligible:
        reasons = "; ".join(f"v{c.version} {c.reason}" for c in candidates[:5])
        raise PersondetError(f"no eligible version of {config.model_name!r} to promote by {config.metric}: "
                             f"needs a dataset_mix of merged data and an evaluation on "
                             f"{test_name or 'a test set'} ({reasons})")
    best = max(eligible, key=lambda c: (c.value, -int(c.version)))  # tie: the lower version wins
    current = version_by_alias(config.model_name, config.alias)
    champion = next((c for c in candidates if current is not None and c.version == str(current.version)), None)

    if champion is best and champion.stage == config.stage:
        decision, reason = "kept", f"v{best.version} is already {config.alias} and the best"
    elif champion is not None and champion is not best and champion.eligible \
            and champion.value >= best.value:
        decision, reason = "kept", (f"{config.alias} v{champion.version} ({champion.value:.4f}) is not "
                                    f"beaten by v{best.version} ({best.value:.4f})")
    else:
        decision = "promoted"
        if champion is None:
            reason = f"v{best.version} is the first {config.alias}"
        elif champion is best:
            reason = f"v{best.version} moved back to stage {config.stage}"
        elif champion.eligible:
            reason = f"v{best.version} ({best.value:.4f}) beats v{champion.version} ({champion.value:.4f})"
        else:
            reason = f"v{best.version} replaces v{champion.version} ({champion.reason})"
        promote_version(config.model_name, best.version, config.alias, config.stage, {
            "promote.metric": config.metric, f"promote.{config.metric}": f"{best.value:.6f}",
            "promote.test_name": test_name, "promote.test_digest": digest, "promote.decision": reason})
        if champion is not None and champion is not best:
            set_version_tags(config.model_name, champion.version,
                                      {"promote.decision": f"archived: replaced by v{best.version}"})
        best.stage = config.stage
        if champion is not None and champion is not best and champion.stage == config.stage:
            champion.stage = "Archived"
        champion = best

    rows = decision_table(candidates, config.metric, champion.version if champion else "", best.version)
    text = format_table(rows)
    print(f"promote by {config.metric} on {test_name} (digest {digest}):\n{text}\n"
          f"decision: {decision}: {reason}")
    _log_run(config, decision, reason, champion.version, test_name, digest, text)
    return PromoteResult(decision, champion.version, test_name, digest, config.metric, rows, reason)


def _log_run(config: PromoteConfig, decision: str, reason: str, champion: str, test_name: str,
             digest: str, table: str) -> None:
    with open_run("promote", run_name=run_name("promote"),
                  tags={"persondet.decision": decision, REASON_TAG: reason, "persondet.champion_version": champion,
                        "persondet.test_name": test_name, "persondet.test_digest": digest}) as run:
        run.log_params(config.to_params())
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "decision.md")
            with open(path, "w") as f:
                f.write(f"# promote by {config.metric} on {test_name} (digest {digest})\n\n```\n{table}\n```\n\n"
                        f"decision: {decision}: {reason}\n")
            run.log_artifact(path)

