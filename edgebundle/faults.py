"""Fault injection: named kill points, so tests can prove every step survives ``kill -9``.

Set ``EDGEBUNDLE_FAULTPOINT=NAME`` (or ``NAME@N`` for the N-th time the point is reached, counted
from 1 within one process) and the process (``installer`` or ``bundle``) SIGKILLs itself there: no cleanup, no
``finally`` blocks, no flushed buffers, exactly as when power is cut or the USB stick is pulled.
The next run must resume and finish with the same result as an uninterrupted run.

A mode suffix ``NAME[@N]:MODE`` picks another fault at the same place:

- ``kill`` (the default): SIGKILL, as above.
- ``stop``: SIGSTOP, so a test can change the world (stop the site registry) while the installer
  is frozen at a known point, then SIGCONT it.
- ``enospc``: raise ``OSError(ENOSPC)`` as a full disk does, where no small filesystem can be
  mounted to fill for real (only meaningful at points that write).

Every kill point is declared in :data:`FAULTPOINTS` with what has (and has not) happened when it
fires; :func:`faultpoint` refuses undeclared names so the list stays complete. Test drivers
iterate over :data:`FAULTPOINTS` (or ``python -m edgebundle.faults`` prints them).

Invariant: with the variable unset, :func:`faultpoint` does nothing but a dictionary lookup.
"""

from __future__ import annotations

import errno
import os
import signal

ENV = "EDGEBUNDLE_FAULTPOINT"

#: name -> the state of the world when the process dies there.
FAULTPOINTS: dict[str, str] = {
    # verification (core.open_verified)
    "verify.done": "bundle fully verified and its trust files remembered; no destination touched",
    # load (destinations/registry.py)
    "load.blob.chunk": "one more 1 MiB piece of a blob was handed to the registry upload (mid-blob)",
    "load.blob.pushed": "a blob upload completed (201) but is not yet in the journal",
    "load.blob.journaled": "a pushed blob was recorded in the journal",
    "load.manifest.pushed": "a manifest (or index) was PUT by digest, not yet journaled",
    "load.tag.pushed": "an image's tag was PUT (the image is complete), not yet journaled",
    "load.image.journaled": "an image (blobs, manifests and tag) was recorded in the journal",
    "load.confirmed": "every manifest digest was confirmed from the registry; step not yet journaled",
    # stage (destinations/nas.py)
    "stage.file.chunk": "one more 1 MiB piece of a model file was written to its temp name",
    "stage.file.written": "a model file is written, fsynced and re-hashed, but not renamed yet",
    "stage.file.renamed": "a model file was renamed into the hidden partial dir, not yet journaled",
    "stage.file.journaled": "a staged model file was recorded in the journal",
    "stage.marker.written": "every file of a model version and its marker are in the partial dir",
    "stage.commit.recorded": "every version is proven in its hidden dir and the commit record is durable",
    "stage.version.renamed": "a model version dir was renamed into place, not yet journaled",
    "stage.version.journaled": "a staged model version was recorded in the journal",
    "stage.commit.undone": "a refused commit renamed one visible version back to its hidden dir",
    # state (installer/state.py)
    "journal.appended": "one more journal record was appended and fsynced (any step: verify, load, stage)",
    "verify.signatures.kept": "a verified bundle's root envelope is kept in the state dir, root.json not yet",
    # apply (installer/revisions.py, installer/destinations/cluster.py)
    "apply.revision.pending": "the revision record was written as pending; the cluster is untouched",
    "apply.object.applied": "one more object was server-side applied (mid-sequence)",
    "apply.manifest.chunk": "one more piece of the k3s manifest file went to its temp name (mid-write)",
    "apply.objects.applied": "every object of the revision is applied; the health wait begins",
    "apply.healthy": "the revision is healthy, but not yet recorded as deployed",
    "apply.revision.failed": "the revision was recorded as failed; the automatic rollback has not started",
    "rollout.step.holding": "a canary step is recorded and its replicas set; its interval is running (@N: step N)",
    # bundle push (bundler/publish.py)
    "push.blob.sent": "one more blob of the bundle is in the registry; the bundle manifest is not tagged yet",
    # core.install
    "step.journaled": "a destination step was marked done in the journal",
    "installed.before": "load and stage are both done; installed.json not yet written",
}

MODES = ("kill", "stop", "enospc")

_hits: dict[str, int] = {}


def _target() -> tuple[str, int, str] | None:
    raw = os.environ.get(ENV)
    if not raw:
        return None
    spec, _, mode = raw.partition(":")
    name, _, nth = spec.partition("@")
    if (mode or "kill") not in MODES:
        raise ValueError(f"{ENV}={raw!r}: unknown mode {mode!r} (one of {', '.join(MODES)})")
    return name, int(nth) if nth.isdigit() else 1, mode or "kill"


def faultpoint(name: str) -> None:
    """Fault here (SIGKILL by default) when ``$EDGEBUNDLE_FAULTPOINT`` names this point and hit count."""
    if name not in FAULTPOINTS:
        raise ValueError(f"undeclared fault point {name!r}; add it to edgebundle.faults.FAULTPOINTS")
    target = _target()
    if target is None or target[0] != name:
        return
    _hits[name] = _hits.get(name, 0) + 1
    if _hits[name] != target[1]:
        return
    if target[2] == "enospc":
        raise OSError(errno.ENOSPC, f"{os.strerror(errno.ENOSPC)} (injected at {name})")
    os.kill(os.getpid(), signal.SIGSTOP if target[2] == "stop" else signal.SIGKILL)


def main() -> None:
    """Print the kill points, one per line: NAME<TAB>what has happened when it fires."""
    for name, what in FAULTPOINTS.items():
        print(f"{name}\t{what}")


if __name__ == "__main__":
    main()
