"""Schemas of the documents the installer writes and later reads back: plans, approvals and
staging validation records (one strict pydantic schema each; see edgebundle/documents.py).

The stage commit record (:class:`StageCommitDocument`) never leaves the state directory, but the
state directory is not trusted to be clean either, so it is read through its schema too.

A plan file or a record is handed between operators and sites, so it is input like any other: it
is checked against its schema (unknown keys, wrong types) before its content or hash is trusted.
The nested Kubernetes objects and cluster identities inside stay free-form (``dict``): they are
checked where they are used (render, policy, the API server).

Invariant: a document that passes has exactly the top-level keys and types listed here; the
modules that make these documents (installer/plan.py, approval.py, validate.py, revisions.py,
destinations/nas.py) must add a field here when they add one to what they write.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from edgebundle.documents import Strict


class BundleRef(Strict):
    name: str
    version: str
    root: str


class PlanEntry(Strict):
    id: str
    ref: dict[str, Any]
    action: Literal["create", "update", "replace", "delete", "unchanged"]
    changes: list[dict[str, Any]]
    #: fields another field manager set that applying takes over: ``field (manager)``
    takeover: list[str] = []
    object: dict[str, Any] | None


class PlanDocument(Strict):
    type_: str = Field(alias="_type")
    formatVersion: int
    created: str
    purpose: str
    site: str
    stateDir: str
    cluster: dict[str, Any]
    target: str
    bundle: BundleRef
    previousRevision: int | None
    currentRevision: int | None
    revision: int
    rollbackOf: int | None
    objects: list[PlanEntry]
    observed: dict[str, Any]
    images: list[dict[str, Any]]
    models: list[dict[str, Any]]
    usedImages: dict[str, str]
    usedModels: dict[str, dict[str, Any]]
    notes: list[str]
    validation: dict[str, Any] | None
    unsettled: str | None
    #: canary rollouts of annotated Deployments (installer/rollout.py); absent when there are none
    rollouts: list[dict[str, Any]] = []
    planHash: str


class ApprovalDocument(Strict):
    type_: str = Field(alias="_type")
    planHash: str
    operator: str
    approvedAt: str
    expiresAt: str
    bundle: BundleRef
    site: str
    cluster: dict[str, Any]
    revision: int
    summary: dict[str, int]


class ValidationCheck(Strict):
    object: str
    check: str
    ok: bool
    detail: str = ""


class ValidationPredicate(Strict):
    """The predicate of a staging validation record (an in-toto Statement, installer/validate.py)."""

    bundle: BundleRef
    site: str
    cluster: dict[str, Any]
    revision: int
    validatedAt: str
    checks: list[ValidationCheck]


def _one_component(value: str) -> str:
    """A single path component: never empty, ``.``, ``..``, nor holding ``/`` or NUL."""
    if value in ("", ".", "..") or "/" in value or "\0" in value or len(value.encode()) > 255:
        raise ValueError(f"{value!r} is not a single path component")
    return value


Component = Annotated[str, AfterValidator(_one_component)]


class CommitVersion(Strict):
    """One version of a stage commit: ``<kindDir>/<name>/<partial>`` becomes ``<kindDir>/<name>/<version>``."""

    kindDir: Literal["llm", "embeddings", "indices"]
    name: Component
    version: Component
    partial: Component


class StageCommitDocument(Strict):
    """``STATE_DIR/stage-commit.json``: the commit point of a stage (installer/destinations/nas.py).

    ``state`` is ``commit`` (every version was proven in its hidden dir: roll forward) or
    ``abort`` (a rename was refused: roll back the versions already renamed).
    """

    type_: Literal["edgebundle.stage-commit"] = Field(alias="_type")
    root: str = Field(pattern=r"^sha256:[0-9a-f]{64}$")
    modelsRoot: str
    state: Literal["commit", "abort"]
    versions: list[CommitVersion] = Field(min_length=1)


class RevisionRecord(BaseModel):
    """``STATE_DIR/revisions/<N>.json`` (installer/revisions.py): one applied (or attempted) revision.

    Not frozen: :class:`installer.revisions.RevisionStore` updates records in place.
    """

    model_config = ConfigDict(extra="forbid", strict=True)
    revision: int = Field(ge=0)
    status: Literal["pending", "deployed", "failed", "superseded", "rolled-back"]
    trigger: str
    rollbackOf: int | None
    site: str
    cluster: dict[str, Any]
    bundle: BundleRef
    planHash: str = Field(pattern=r"^sha256:[0-9a-f]{64}$")
    operator: str
    startedAt: str
    objects: list[dict[str, Any]]
    images: dict[str, Any]
    models: dict[str, Any]
    summary: dict[str, int]
    finishedAt: str | None = None
    reason: str | None = None
    failedObject: Any = None
    health: Literal["healthy", "not-watched"] | None = None
    removedCreated: int | None = None
    stillPresent: list[str] | None = None
    #: progress of a canary rollout (installer/rollout.py): phase, step, gate readings
    rollout: dict[str, Any] | None = None
