"""Where a verified bundle's content goes: the site registry, the NAS, a cluster.

Each destination implements :class:`Destination`; :func:`installer.core.install` feeds a
verified bundle into them in turn. A destination proves each blob it writes as it writes it
and records each finished item in the bundle's journal (resumable, idempotent).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from edgebundle.progress import Progress

if TYPE_CHECKING:
    from edgebundle.verify import VerifiedBundle
    from installer.state import Journal

#: ``progress(label, total_bytes)`` -> a callable fed byte counts (see :mod:`edgebundle.progress`).
ProgressFactory = Callable[[str, int | None], Progress]


def progress_factory(enabled: bool | None) -> ProgressFactory:
    """Progress bars on a terminal (``None``: when stderr is a TTY), never with ``False``."""
    return lambda label, total: Progress(label, total, enabled=enabled)


QUIET: ProgressFactory = progress_factory(False)


@dataclass
class StepResult:
    """What one destination did: items written now, items already in place, bytes sent."""

    step: str
    target: str
    done: int = 0
    skipped: int = 0
    bytes: int = 0
    details: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class Destination(Protocol):
    """Somewhere a verified bundle's content goes (the site registry, the NAS, a cluster)."""

    #: Journal step name, e.g. ``load`` or ``stage``.
    step: str
    #: Where it writes (registry address, models root), recorded with the step.
    target: str

    def apply(self, vb: VerifiedBundle, journal: Journal, progress: ProgressFactory) -> StepResult:
        """Put the bundle's content in place; idempotent, resumable from ``journal``."""
        ...
