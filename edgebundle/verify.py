"""The verifier: proves a bundle genuine and intact before anything acts on it.

:meth:`Verifier.verify` enforces the order of trust, and each step only relies on what the steps
before it established:

0. container pre-check: :meth:`BundleSource.precheck` runs first (split parts: the signed part
   index, then each part's presence, size and, with content, sha256, naming the part and byte
   range that is wrong; see edgebundle/parts.py);
1. structure: the container lists only safe, regular, non-duplicate members (the source checks);
2. signatures: the root envelope ``edgebundle/root.dsse.json`` (bounded, DSSE) is signed by at
   least ``threshold`` trusted keys; nothing in the root is looked at before this (a delta's
   zstd-compressed root is decompressed only then, bounded by the root size limit);
3. root: the signed bytes parse strictly (types, digests, every entry names a pinned blob);
4. policy: not expired (unless the operator allowed it), ``compatible`` equals the site's, the
   version is not older than the installed one (unless a downgrade was allowed), a delta names
   the expected base;
5. completeness: the members are exactly what the root pins, nothing missing, nothing extra;
6. content: every member is streamed through sha256 and compared with its pin; a ``tar+zstd``
   model file is also decoded (bounded by its signed size) and compared with its file pin, so a
   signed but hostile layer (a zstd bomb, an inner tar that lies) is refused here, not mid-stage;
   a delta's carried patches are decoded (against zeros of the base's sizes) within their
   signed output sizes, and its pack of small documents to exactly its signed decoded size, so a
   patch or pack bomb is refused here, not only by ``load``; signed Kubernetes
   manifests are parsed as YAML within bounds (edgebundle/boundedyaml.py), so an alias bomb or a
   5,000-deep document is refused before anything is written. Blobs are independent: they are
   hashed in parallel, one thread per core, largest first; a large blob whose root entry lists
   piece digests is hashed as independent pieces (at most 16 per blob). A range the source's head
   start already hashed (:meth:`BundleSource.early_digests`, edgebundle/headstart.py) is not read
   again: its digest is compared with the pin like one computed here.

Every failure raises a subclass of :class:`edgebundle.errors.VerificationError` whose message names
the culprit. A :class:`VerifiedBundle` exists only after all six steps passed.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass

from edgebundle import layout
from edgebundle import mediatypes as mt
from edgebundle.boundedyaml import YamlBoundError, load_all_bounded
from edgebundle.compress import open_tar_zstd_member
from edgebundle.digest import (
    Cancelled,
    DigestMismatchError,
    check,
    hash_stream,
    hash_stream_ahead,
    piece_bytes,
    piece_mismatch,
    sha256_bytes,
)
from edgebundle.errors import VerificationError
from edgebundle.ocinames import MAX_MANIFEST_BYTES
from edgebundle.rebuild import open_member, prove_patches
from edgebundle.root import ModelEntry, ModelFile, Root, format_time, parse_root, version_key
from edgebundle.signing import Envelope, LegacyFormatError, TrustStore, parse_envelope, verify
from edgebundle.sources import BundleSource, read_small
from edgebundle.tarfmt import TarFormatError

#: Blobs hashed at once in step 6: one per core (hashlib and zstd release the GIL).
WORKERS = max(1, min(8, os.cpu_count() or 1))


class IncompatibleError(VerificationError):
    """The bundle is for different software/hardware than this site."""


class RollbackError(VerificationError):
    """The bundle is older than what the site already runs."""


class MissingMemberError(VerificationError):
    """A member the root pins is absent."""


class ExtraMemberError(VerificationError):
    """A member is present that the root does not list."""


class WrongBaseError(VerificationError):
    """A delta was built against a base this site does not have."""


class ExpiredError(VerificationError):
    """The bundle's signed ``expires`` has passed."""


def root_envelope(source: BundleSource) -> Envelope:
    """The bundle's root envelope, parsed but NOT verified (for display and early names only)."""
    return parse_envelope(read_root_envelope(source), layout.ROOT, mt.ROOT_PAYLOAD_TYPES,
                          layout.MAX_ROOT_ENVELOPE_BYTES)


def read_root_envelope(source: BundleSource) -> bytes:
    """The bytes of the root envelope (bounded); an old-format bundle is named as such."""
    members = source.members()
    if layout.ROOT not in members:
        legacy = [n for n in layout.LEGACY_TRUST_FILES if n in members]
        if legacy:
            raise LegacyFormatError(
                f"{source.description} has {legacy[0]} but no {layout.ROOT}: it is a bundle of the "
                "pre-DSSE format (detached signatures.json), which this edgebundle no longer reads",
                hint="rebuild it with this edgebundle: bundle create SPEC --key KEY -o OUT")
        raise MissingMemberError(f"{source.description} has no {layout.ROOT}",
                                 hint="this is not an edgebundle bundle, or it is incomplete")
    return read_small(source, layout.ROOT, layout.MAX_ROOT_ENVELOPE_BYTES)


@dataclass(frozen=True)
class VerifiedBundle:
    """A bundle that passed every check, with its parsed root."""

    root: Root
    root_bytes: bytes  # the root document the signatures cover (decompressed): root_digest names it
    signers: list[str]
    source: BundleSource
    envelope: bytes = b""  # the exact root envelope that was checked (kept by the installer)

    @property
    def root_digest(self) -> str:
        return sha256_bytes(self.root_bytes)

    def read_sbom(self) -> bytes | None:
        """The bundle's SBOM, hashed again against its signed pin as it is read (None: built
        before bundles carried one)."""
        pin = self.root.files.get(layout.SBOM)
        if pin is None:
            return None
        if layout.SBOM in self.root.packed_files and not self.source.full_target:
            with open_member(self.source, self.root, layout.SBOM) as f:  # out of the delta's pack
                return f.read()  # hashed against the pin as it is read
        data = read_small(self.source, layout.SBOM, layout.MAX_JSON_BYTES)
        check(layout.SBOM, pin.digest, pin.size, sha256_bytes(data), len(data))
        return data


@dataclass
class Policy:
    """Site-side expectations; the builder's own ``bundle verify`` only checks expiry."""

    compatible: str | None = None
    installed: tuple[str, str] | None = None  # (name, version) the site runs now
    allow_downgrade: bool = False
    base_root: str | None = None  # for a delta: the root digest of the base the site has
    allow_expired: bool = False  # the operator accepted a bundle past its ``expires``


class Verifier:
    """Checks a :class:`BundleSource` against a :class:`TrustStore` and a :class:`Policy`."""

    def __init__(self, trust: TrustStore, policy: Policy | None = None,
                 progress: Callable[[int], None] | None = None) -> None:
        self.trust = trust
        self.policy = policy or Policy()
        self.progress = progress

    def verify(self, source: BundleSource, *, content: bool = True) -> VerifiedBundle:
        """Run the six steps; with ``content=False`` stop after the manifests (cheap re-check)."""
        vb = self.signed_root(source, content=content)
        root = vb.root
        pins = root.member_pins(full=source.full_target)
        # Signed manifests are small and every step's later parse depends on them: proven and
        # parsed within bounds on every full pass, so no step writes anything before a bomb is refused.
        self._check_manifests(source, root, pins)
        if content:
            self._check_content(source, root, pins)  # 6.
            if root.is_delta and not source.full_target:
                prove_patches(source, root)  # carried patches decode within their signed sizes
        return vb

    def signed_root(self, source: BundleSource, *, content: bool = False) -> VerifiedBundle:
        """Steps 0-5: the root's signatures, its strict parse, the policy, every pinned member
        present. What a caller learns before it picks the full pass's policy (the bundle's name,
        for the rollback check); ``content`` tells a split bundle's pre-check what follows."""
        source.precheck(self.trust, self.progress, content=content)  # 0. container pre-check (split parts)
        members = source.members()  # 1. structure
        envelope, root_bytes, signers = self._check_signatures(source)  # 2.
        root = parse_root(root_bytes)  # 3.
        self._check_policy(root)  # 4.
        self._check_completeness(source, members, root.member_pins(full=source.full_target))  # 5.
        return VerifiedBundle(root, root_bytes, signers, source, envelope)

    def _check_signatures(self, source: BundleSource) -> tuple[bytes, bytes, list[str]]:
        data = read_root_envelope(source)
        signed = verify(data, mt.ROOT_PAYLOAD_TYPES, self.trust, layout.ROOT, layout.MAX_ROOT_ENVELOPE_BYTES)
        return data, signed.payload, signed.signers

    def _check_policy(self, root: Root) -> None:
        p = self.policy
        now = time.time()
        if not p.allow_expired and root.expires_at is not None and now >= root.expires_at:
            raise ExpiredError(
                f"bundle {root.name} {root.version} expired at {root.expires} (it is now {format_time(now)})",
                hint="ask the build host for a fresh bundle; to install it anyway pass --allow-expired "
                     "REASON (the reason is journaled and audited)")
        if p.compatible is not None and root.compatible != p.compatible:
            raise IncompatibleError(
                f"bundle {root.name} {root.version} is for '{root.compatible}', this site is '{p.compatible}'",
                hint="use the bundle built for this site's platform")
        if p.installed is not None and not p.allow_downgrade:
            name, version = p.installed
            if name == root.name and version_key(root.version) < version_key(version):
                raise RollbackError(
                    f"bundle {root.name} {root.version} is older than the installed {version}",
                    hint="use a newer bundle, or pass --allow-downgrade REASON to roll back on purpose")
        if root.base is not None and p.base_root is not None and root.base.root != p.base_root:
            raise WrongBaseError(
                f"delta {root.name} {root.version} applies to base {root.base.name} "
                f"{root.base.version} (root {root.base.root}), but this site has root {p.base_root}",
                hint="install the full bundle instead, or a delta built against what the site has")

    def _check_completeness(self, source: BundleSource, members: dict[str, int],
                            pins: dict[str, tuple[str, int]]) -> None:
        expected = set(pins) | {layout.ROOT}
        missing = sorted(expected - set(members))
        if missing:
            raise MissingMemberError(
                f"{source.description} lacks {len(missing)} member(s) the signed root lists: "
                + ", ".join(missing[:5]) + (" ..." if len(missing) > 5 else ""),
                hint="the bundle is incomplete; copy it again from the build host")
        extra = sorted(set(members) - expected)
        if extra:
            raise ExtraMemberError(
                f"{source.description} holds {len(extra)} member(s) the signed root does not list: "
                + ", ".join(extra[:5]) + (" ..." if len(extra) > 5 else ""),
                hint="something was added to the bundle after signing; do not install it")
        for name, (_, size) in pins.items():
            if members[name] != size:
                raise DigestMismatchError(
                    f"{name}: size is {members[name]} bytes, the signed root says {size}",
                    hint="the bundle is truncated or was altered; copy it again from the build host")

    @staticmethod
    def _check_manifests(source: BundleSource, root: Root, pins: dict[str, tuple[str, int]]) -> None:
        """Signed Kubernetes manifests match their pins and parse as YAML within bounds (aliases,
        expansion, depth); a delta's packs are hashed first, so a damaged one is named as such."""
        for name in sorted(n for n in pins if (root.delta or {}).get("carried", {}).get(
                layout.digest_of_blob_path(n) or "", {}).get("kind") == "pack"):
            _check_member(source, name, pins[name], None, threading.Event())
        for mf in root.manifests.files if root.manifests else []:
            name = layout.blob_path(mf.digest)
            packed = (root.delta or {}).get("rebuild", {}).get(mf.digest, {}).get("method") == "packed"
            if name in pins:
                data = read_small(source, name, MAX_MANIFEST_BYTES)
                check(name, pins[name][0], pins[name][1], sha256_bytes(data), len(data))
            elif packed and mf.size <= MAX_MANIFEST_BYTES:  # in a delta's pack: read out of it, checked
                with open_member(source, root, name) as f:
                    data = f.read()
            elif packed:
                raise VerificationError(f"manifest {mf.path} is {mf.size} bytes, over the "
                                        f"{MAX_MANIFEST_BYTES}-byte limit of a manifest")
            else:  # a delta that does not carry it: checked when rebuilt
                continue
            try:
                load_all_bounded(data, f"manifest {mf.path}")
            except YamlBoundError as e:
                raise VerificationError(f"{e.message} (signed, but not safe to parse)", hint=e.hint) from None

    def _check_content(self, source: BundleSource, root: Root, pins: dict[str, tuple[str, int]]) -> None:
        """Step 6 and its decode check as independent tasks, largest first, on every core.

        hashlib and zstd release the GIL, so threads hash blobs in parallel, 1 MiB at a time: one
        task's reads overlap another's hashing. A blob whose root entry lists piece digests is
        proven piece by piece, the pieces as tasks of their own, so one 4 GiB model file keeps
        every core busy (a source that cannot seek hashes it whole instead: its ``digest`` pins the
        same bytes). A carried ``tar+zstd`` file is also decoded, as a task of its own whose
        decoded bytes are hashed on a thread of their own
        (:func:`edgebundle.digest.hash_stream_ahead`). A bad blob stops the tasks after it in tar
        order, so of several bad blobs the first in tar order is named, as a sequential pass
        would; a failed decode stops nothing (the blob's own digest error, if it has one, is the
        better message).
        """
        names = [n for n in (source.tar_order() or sorted(pins)) if n in pins]
        rank = {n: i for i, n in enumerate(names)}
        progress = self.progress
        if progress is not None:  # one counter fed by every thread
            lock, feed = threading.Lock(), progress

            def progress(n: int) -> None:
                with lock:
                    feed(n)
        # (size, (decoded?, tar rank), task); a blob with signed pieces is one task per piece
        tasks: list[tuple[int, tuple[int, int], Callable[[threading.Event], None]]] = []
        pieced = {layout.blob_path(d): b for d, b in root.blobs.items() if b.pieces} if source.random_access else {}
        early = source.early_digests()  # ranges a head start already hashed: compared, not re-read
        for n in names:
            blob = pieced.get(n)
            if blob is not None and pins[n] == (blob.digest, blob.size):
                step = piece_bytes(blob.size)
                for i, piece in enumerate(blob.pieces):
                    at, length = i * step, min(step, blob.size - i * step)
                    which, got = (i, len(blob.pieces)), early.get((n, at, length))
                    tasks.append((length, (0, rank[n]), lambda stop, n=n, which=which, piece=piece, at=at, length=length,
                                  got=got: _check_piece(source, n, which, piece, at, length, progress, stop, got)))
            else:
                got = early.get((n, 0, pins[n][1]))
                tasks.append((pins[n][1], (0, rank[n]),
                              lambda stop, n=n, got=got: _check_member(source, n, pins[n], progress, stop, got)))
        for m in root.models:
            for f in m.files:
                name = layout.blob_path(f.blob)
                if f.encoding == "tar+zstd" and name in pins:
                    tasks.append((f.size, (1, rank[name]),
                                  lambda stop, m=m, f=f, name=name: _check_encoded(source, m, f, name, stop)))
        tasks.sort(key=lambda t: -t[0])
        stops = [threading.Event() for _ in tasks]  # a bad blob stops the tasks after it in tar order
        failures: list[tuple[tuple[int, int], BaseException]] = []
        with ThreadPoolExecutor(max_workers=WORKERS) as pool:
            futures = {pool.submit(fn, stop): at for (_, at, fn), stop in zip(tasks, stops)}
            for fut in as_completed(futures):
                e = fut.exception()
                if e is not None and not isinstance(e, Cancelled):
                    kind, at = futures[fut]
                    failures.append(((kind, at), e))
                    for (_, (_, other), _), stop in zip(tasks, stops):
                        if kind == 0 and other > at:
                            stop.set()
        if failures:
            raise min(failures, key=lambda f: f[0])[1]


def _hash_range(source: BundleSource, name: str, at: int, length: int, progress: Callable[[int], None] | None,
                stop: threading.Event, early: str | None, *, to_end: bool = False) -> tuple[str, int]:
    """Digest and size of ``length`` bytes of member ``name`` from ``at`` (``to_end``: of all of it
    from there, so a member longer than its pin shows): the head start's digest of exactly those
    bytes when it has one (:meth:`BundleSource.early_digests`)."""
    if stop.is_set():
        raise Cancelled()
    if early is not None:
        if progress:
            progress(length)
        return early, length
    with source.open(name) as f:
        if at:
            f.seek(at)
        return hash_stream(f, progress, stop, limit=None if to_end else length)


def _check_member(source: BundleSource, name: str, pin: tuple[str, int],
                  progress: Callable[[int], None] | None, stop: threading.Event, early: str | None = None) -> None:
    got, got_size = _hash_range(source, name, 0, pin[1], progress, stop, early, to_end=True)
    check(name, pin[0], pin[1], got, got_size)


def _check_piece(source: BundleSource, name: str, which: tuple[int, int], pin: str, at: int, length: int,
                 progress: Callable[[int], None] | None, stop: threading.Event, early: str | None = None) -> None:
    """One signed piece of a large blob: ``length`` bytes at offset ``at`` hash to ``pin``."""
    got, got_size = _hash_range(source, name, at, length, progress, stop, early)
    if (got, got_size) != (pin, length):
        raise piece_mismatch(name, which, at, length, pin, got, got_size,
                             hint="the bundle was altered or the media is corrupt; copy it again from the build host")


def _check_encoded(source: BundleSource, m: ModelEntry, f: ModelFile, name: str, stop: threading.Event) -> None:
    """A carried ``tar+zstd`` file decodes to its signed file digest (at most its size is read)."""
    if stop.is_set():
        raise Cancelled()
    what = f"model {m.name} {m.version}, file {f.path} (blob {f.blob[:19]})"
    with source.open(name) as blob:
        try:
            decoded = open_tar_zstd_member(blob, f.size, what)
            got, got_size = hash_stream_ahead(decoded, None, stop)  # type: ignore[arg-type]
        except TarFormatError as e:  # the inner tar's own message does not say which file
            raise TarFormatError(f"{what}: {e.message}", hint=e.hint) from None
    check(f"{what} decoded", f.digest, f.size, got, got_size)
