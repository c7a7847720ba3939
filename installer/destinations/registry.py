"""The ``load`` step: push a verified bundle's images into the site registry, bytes unchanged.

Every image's layers and config go first, then the per-platform manifests by digest, then
the index (if any), and the tag last, so a tag never names an image whose parts are missing.
Every blob is pushed to the image's own repository (a blob another repository already has is
mounted, not sent again); blobs the registry already holds are skipped after a ``HEAD``.
Blobs go up ``UPLOADS`` at a time, largest first (the registry writes and hashes them on its own
cores while we read and hash the next), and each distinct blob is sent once: its other
repositories mount it as soon as it is in. An image's manifests and tag go up as soon as every
blob that image names is in its repository, while other images' blobs may still be uploading
(the registry's work on the largest blob is what a load waits for). Every manifest digest and
tag is then confirmed from the registry: an image's right after its manifests (during the other
uploads), and whatever did not confirm there once more at the end, where a mismatch is reported.

Invariants:
- Exact bytes: manifests and indexes are pushed as the bundle's signed bytes (the client
  refuses bytes that do not hash to the digest they are pushed under); blobs are streamed from
  the bundle in 1 MiB pieces, hashed as they go (a mismatch cancels the upload), and the
  registry checks their digest again on the final ``PUT``. This is the only content check a
  blob gets before ``load`` (installer/core.py): a tag or manifest is pushed only after every
  blob its image names is in the image's repository under its digest (a blob shared with another
  image is pushed once and mounted: both images wait for it). Within an image the order is
  fixed: per-platform manifests, the index or manifest under its tag, then what is attached.
- Every structural fact used here (children of an index, config and layers of a manifest) comes
  from a document whose digest the signed root pins, and every blob it names must be pinned too.
- Resumable: each pushed blob, manifest and tag is journaled; a rerun skips journaled items and
  redoes at most the one in flight. If the registry lost what the journal claims (it was wiped),
  the confirmation fails, the step's journal is reset and everything is pushed again.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from typing import Any, BinaryIO

from edgebundle import layout
from edgebundle.digest import CHUNK, DigestMismatchError
from edgebundle.errors import RegistryError, VerificationError
from edgebundle.faults import faultpoint
from edgebundle.registry import Registry
from edgebundle.remote import RegistrySource
from edgebundle.root import BlobPin
from edgebundle.sources import BundleSource
from edgebundle.verify import VerifiedBundle
from installer.destinations import ProgressFactory, StepResult
from installer.imageplan import Document, ImagePlan, plan_image
from installer.site import Site
from installer.state import Journal

#: Blob uploads in flight at once (the registry and the source read overlap; the memory per
#: upload is one read chunk).
UPLOADS = 3


class _MemberReader:
    """A blob of the bundle as a closable stream for the upload; feeds progress and a kill point."""

    def __init__(self, source: BundleSource, name: str, progress: Any) -> None:
        self._stack = contextlib.ExitStack()
        self._f: BinaryIO = self._stack.enter_context(source.open(name))
        self._progress = progress
        self.read_bytes = 0

    def read(self, n: int = -1) -> bytes:
        data = self._f.read(CHUNK if n is None or n < 0 else min(n, CHUNK))
        if data:
            self.read_bytes += len(data)
            self._progress(len(data))
            faultpoint("load.blob.chunk")
        return data

    def close(self) -> None:
        self._stack.close()


class RegistryDestination:
    """Pushes images to one registry; see the module docstring for the order and the checks."""

    step = "load"

    def __init__(self, registry: Registry) -> None:
        self.registry = registry
        self.target = registry.host
        self._trusted = 0  # items skipped in this pass only because the journal says done
        self._lock = threading.Lock()  # journal, progress and result are shared by the uploads
        self._depot: str | None = None  # the bundle's repository when the bundle is in this registry
        self._confirmed: set[str] = set()  # images whose manifests and tags the registry served right

    @classmethod
    def for_site(cls, site: Site) -> "RegistryDestination":
        options: dict[str, Any] = {}
        if site.registry_chunk_size:
            options["chunk_size"] = site.registry_chunk_size
        insecure = (site.registry_address,) if site.registry_plain_http else ()
        return cls(Registry(site.registry_address, insecure_hosts=insecure, **options))

    def apply(self, vb: VerifiedBundle, journal: Journal, progress: ProgressFactory) -> StepResult:
        plans = [plan_image(vb, im) for im in vb.root.images]
        result = self._push_all(vb, plans, journal, progress, trust_journal=True)
        try:
            self.confirm(plans)
        except VerificationError as e:
            if not self._trusted:
                raise
            # The journal said done but the registry disagrees (wiped or rolled back): redo all.
            journal.reset_step(self.step)
            result = self._push_all(vb, plans, journal, progress, trust_journal=False)
            result.details.append({"note": f"registry lost content the journal recorded ({e}); pushed again"})
            self.confirm(plans)
        faultpoint("load.confirmed")
        return result

    # -- pushing ---------------------------------------------------------------------------
    def _push_all(self, vb: VerifiedBundle, plans: list[ImagePlan], journal: Journal,
                  progress: ProgressFactory, *, trust_journal: bool) -> StepResult:
        result = StepResult(self.step, self.target)
        self._trusted = 0
        self._confirmed.clear()
        sent_before = self.registry.stats.bytes_sent
        shared_bar = progress(f"load {self.target}", sum(p.size for p in plans))

        def bar(n: int) -> None:
            with self._lock:
                shared_bar(n)

        known: dict[str, str] = {}  # blob digest -> a repository of this registry that has it
        # Installing from a depot that is this very registry: blobs are mounted from the bundle's
        # repository, not streamed out and back in (the registry proved each digest on upload).
        self._depot = (vb.source.repository if isinstance(vb.source, RegistrySource)
                       and vb.source.registry.host == self.registry.host else None)
        first: list[tuple[str, str, BlobPin]] = []  # each distinct blob, in its first repository
        again: list[tuple[str, str, BlobPin]] = []  # the same blob in further repositories: mounted
        seen: set[str] = set()
        for plan in plans:
            for pin in plan.blobs:
                (again if pin.digest in seen else first).append((plan.image.repository, plan.image.refName, pin))
                seen.add(pin.digest)
        first.sort(key=lambda job: -job[2].size)
        blob_jobs = first + again
        jobs: list[Callable[[], None]] = [
            lambda job=job: self._blob(vb, journal, *job, known, bar, result, trust_journal) for job in blob_jobs]
        # A mount waits for the push it mounts; an image's manifests wait for every blob put into
        # its repository (pushed there, or mounted once pushed elsewhere).
        pushed_by = {pin.digest: i for i, (_, _, pin) in enumerate(first)}
        after: dict[int, set[int]] = {len(first) + i: {pushed_by[pin.digest]} for i, (_, _, pin) in enumerate(again)}
        for plan in plans:
            after[len(jobs)] = {i for i, (repo, ref, _) in enumerate(blob_jobs)
                                if repo == plan.image.repository and ref == plan.image.refName}
            jobs.append(lambda plan=plan: self._image(plan, journal, result, trust_journal))
        _run_all(jobs, after)
        shared_bar.done()
        result.bytes = self.registry.stats.bytes_sent - sent_before
        return result

    def _image(self, plan: ImagePlan, journal: Journal, result: StepResult, trust_journal: bool) -> None:
        """An image's manifests in their order (children, the image under its tag, then what is
        attached to it, each after every part it names), then the image's journal record."""
        repo = plan.image.repository
        if plan.is_index:
            for child in plan.children:
                self._manifest(journal, repo, child.digest, child, result, trust_journal)
        ref = plan.image.tag or plan.image.digest
        self._manifest(journal, repo, ref, plan.top, result, trust_journal)
        for a in plan.attached:
            for child in a.children:
                self._manifest(journal, repo, child.digest, child, result, trust_journal)
            self._manifest(journal, repo, a.entry.tag, a.top, result, trust_journal)
        item = f"image {self.target}/{repo}@{plan.image.digest}"
        with self._lock:
            if not journal.item_done(self.step, item):
                journal.mark_item(self.step, item, ref=plan.image.refName)
                faultpoint("load.image.journaled")
        if self._unconfirmed(plan) is None:  # a mismatch is left for confirm() to report
            with self._lock:
                self._confirmed.add(plan.image.refName)

    def _blob(self, vb: VerifiedBundle, journal: Journal, repo: str, ref: str, pin: BlobPin,
              known: dict[str, str], bar: Any, result: StepResult, trust_journal: bool) -> None:
        item = f"blob {self.target}/{repo}@{pin.digest}"
        if trust_journal and journal.item_done(self.step, item):
            with self._lock:
                known.setdefault(pin.digest, repo)
                result.skipped += 1
                self._trusted += 1
            bar(pin.size)
            return
        mount = known.get(pin.digest) or self._depot
        readers: list[_MemberReader] = []

        def opener() -> _MemberReader:
            readers.append(_MemberReader(vb.source, layout.blob_path(pin.digest), bar))
            return readers[-1]

        try:
            added = self.registry.push_blob(repo, pin.digest, pin.size, opener,
                                            mount_from=mount if mount != repo else None)
        except VerificationError as e:  # the bytes on the media are not the signed ones
            raise DigestMismatchError(
                f"{layout.blob_path(pin.digest)}: content digest as streamed to the registry does not "
                f"match the signed {pin.digest} (part of image {ref}): {e.message}",
                hint="the bundle was altered or the media is corrupt; copy it again from the build "
                     "host (nothing was stored under that digest, no tag names it)") from None
        faultpoint("load.blob.pushed")
        bar(max(0, pin.size - sum(r.read_bytes for r in readers)))  # skipped or mounted bytes
        with self._lock:
            known.setdefault(pin.digest, repo)
            journal.mark_item(self.step, item, size=pin.size, pushed=added)
            faultpoint("load.blob.journaled")
            if added:
                result.done += 1
            else:
                result.skipped += 1

    def _manifest(self, journal: Journal, repo: str, ref: str, doc: Document, result: StepResult,
                  trust_journal: bool) -> None:
        sep = "@" if ":" in ref else ":"
        item = f"manifest {self.target}/{repo}{sep}{ref}"
        with self._lock:
            if trust_journal and journal.item_done(self.step, item):
                result.skipped += 1
                self._trusted += 1
                return
        present = self.registry.has_manifest(repo, ref)
        if present != doc.digest:
            self.registry.put_manifest(repo, ref, doc.data, doc.media_type)
            faultpoint("load.manifest.pushed" if sep == "@" else "load.tag.pushed")
        with self._lock:
            if present == doc.digest:
                result.skipped += 1
            else:
                result.done += 1
                if present is not None:
                    result.details.append({"retagged": f"{repo}:{ref}", "from": present, "to": doc.digest})
            journal.mark_item(self.step, item, digest=doc.digest)

    # -- confirming ------------------------------------------------------------------------
    def confirm(self, plans: list[ImagePlan]) -> None:
        """Ask the registry for every manifest and tag (of images not confirmed during the pushes
        of this pass): each must resolve to the bundle's digest."""
        for plan in plans:
            if plan.image.refName in self._confirmed:
                continue
            mismatch = self._unconfirmed(plan)
            if mismatch is not None:
                raise mismatch

    def _unconfirmed(self, plan: ImagePlan) -> DigestMismatchError | None:
        """The first of the image's manifests and tags the registry does not serve as pinned."""
        repo = plan.image.repository
        checks = [(plan.image.tag or plan.image.digest, plan.image.digest)]
        checks += [(c.digest, c.digest) for c in plan.children] if plan.is_index else []
        checks += [(a.entry.tag, a.entry.digest) for a in plan.attached]
        for ref, want in checks:
            got = self.registry.has_manifest(repo, ref)
            if got != want:
                sep = "@" if ":" in ref else ":"
                return DigestMismatchError(
                    f"registry {self.target} serves {repo}{sep}{ref} as {got or 'nothing'}, "
                    f"the bundle pins {want}",
                    hint="something else writes to this repository, or the registry lost data; "
                         "run load again")
        return None


def _run_all(jobs: list[Callable[[], None]], after: dict[int, set[int]] | None = None) -> None:
    """Run ``jobs`` ``UPLOADS`` at a time, each once the jobs it waits for (``after[i]``: indices
    of earlier jobs) have finished; of the jobs ready, the first in the list goes next. After a
    failure start no more, let the running ones end, then raise the failure of the earliest job
    (the one a sequential run would report)."""
    waits = {i: set((after or {}).get(i, ())) for i in range(len(jobs))}
    assert all(j < i for i, deps in waits.items() for j in deps), "a job may wait only for earlier jobs"
    pending = list(range(len(jobs)))  # not started yet, in list order
    finished: set[int] = set()
    failures: dict[int, BaseException] = {}
    changed = threading.Condition()

    def next_job() -> int | None:
        """The first pending job whose waits are over (None: stop); blocks while jobs it needs run.
        The earliest pending job only waits for earlier ones, which are running: one will end."""
        with changed:
            while pending and not failures:
                ready = next((i for i in pending if waits[i] <= finished), None)
                if ready is not None:
                    pending.remove(ready)
                    return ready
                changed.wait()
            return None

    def worker() -> None:
        while (i := next_job()) is not None:
            try:
                jobs[i]()
            except BaseException as e:  # re-raised below, in the caller's thread
                with changed:
                    failures[i] = e
                    changed.notify_all()
            else:
                with changed:
                    finished.add(i)
                    changed.notify_all()

    workers = [threading.Thread(target=worker, name=f"load-{n}") for n in range(min(UPLOADS, len(jobs)))]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    if failures:
        raise failures[min(failures)]


def list_images(registry: Registry) -> list[dict[str, Any]]:
    """Every tagged image in the registry: repository, tag, digest (for ``installer status``)."""
    out = []
    for repo in sorted(registry.catalog()):
        for tag in sorted(registry.list_tags(repo)):
            out.append({"repository": repo, "tag": tag, "digest": registry.has_manifest(repo, tag)})
    return out


__all__ = ["RegistryDestination", "RegistryError", "list_images"]
