"""The tamper-evident audit log: one hash-chained JSON line per installer command.

Every installer verb that can change or judge a site (verify, load, stage, install, plan,
approve, apply, rollback, validate, ...) appends one line to ``<stateDir>/audit.log`` when it
ends, whatever the outcome: who ran it, when, which bundle and plan, and how it ended. The
``installer audit verify`` command proves the log was not edited; ``installer audit show``
prints it.

Format: each line is canonical JSON (edgebundle.root.canonical_json) followed by ``\\n``. A line's
hash is ``sha256:`` of its bytes without the newline. Every record carries ``seq`` (1, 2, ...)
and ``prev``: the hash of the line before it (the first line's ``prev`` is :data:`GENESIS`).

Invariants:
- The log is only ever appended to, by one ``write`` per line under an exclusive ``flock``,
  then fsynced. The one exception: a torn final line (no newline; the process died mid-write)
  is cut off by the next append, which says so in its own record (``repaired``).
- After each append ``audit.head`` is replaced atomically with the last line's seq, hash and the
  log's size. The chain alone cannot show that lines were cut from the *end* of the log; the
  head can. A crash between the append and the head update leaves the log one (valid) line
  ahead of the head, which both :meth:`AuditLog.append` and :meth:`AuditLog.verify` accept.
- When an append finds the log disagreeing with the head in any other way (truncated, edited
  tail, head missing), it still appends, and the new record carries an ``anomaly`` field, so
  the evidence stays in the chain even after the head is rewritten.
- Nothing here needs a secret: the chain makes edits *evident*, not impossible. Someone who can
  rewrite the whole state directory can rebuild a consistent chain; keep a copy of the head
  (``installer audit show --head``) off the machine to detect that (docs/SECURITY.md).
"""

from __future__ import annotations

import contextlib
import contextvars
import fcntl
import functools
import hashlib
import json
import os
import socket
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click

from edgebundle import clikit
from edgebundle.digest import sha256_bytes
from edgebundle.errors import EdgebundleError, VerificationError
from edgebundle.parts import open_source
from edgebundle.root import canonical_json
from edgebundle.verify import root_envelope
from installer.safefs import SafeRoot, open_regular
from installer.site import resolve_site
from installer.state import StateDir, now_iso, operator_name

LOG_NAME = "audit.log"
HEAD_NAME = "audit.head"
#: ``prev`` of the first line: the hash of nothing.
GENESIS = "sha256:" + hashlib.sha256(b"").hexdigest()
#: A record longer than this is refused on reading (and never written: messages are clipped).
MAX_LINE = 64 * 1024
#: Longest error message or parameter value kept in a record.
MAX_TEXT = 2000
_TAIL_CHUNK = 8192


class AuditError(VerificationError):
    """The audit log does not prove its own history: a line was edited, removed or reordered."""


def line_hash(line: bytes) -> str:
    """Hash of one log line (without its newline): what the next line's ``prev`` must be."""
    return "sha256:" + hashlib.sha256(line).hexdigest()


def clip(text: str, limit: int = MAX_TEXT) -> str:
    return text if len(text) <= limit else text[:limit] + f"... ({len(text) - limit} more chars)"


# --- what the running command tells us ---------------------------------------------------

_NOTES: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar("audit_notes", default=None)


def note(**fields: Any) -> None:
    """Record facts the audit line of the running command should carry.

    Commands call e.g. ``audit.note(bundle=vb.root_digest)`` once a bundle is verified,
    ``audit.note(plan=plan_hash)``, or ``audit.note(state_dir=path)`` when they have no
    ``--site``. Outside an audited command this does nothing.
    """
    current = _NOTES.get()
    if current is not None:
        current.update({k: v for k, v in fields.items() if v is not None})


@contextlib.contextmanager
def collecting() -> Iterator[dict[str, Any]]:
    """Collect :func:`note` calls made while the block runs."""
    notes: dict[str, Any] = {}
    token = _NOTES.set(notes)
    try:
        yield notes
    finally:
        _NOTES.reset(token)


# --- the log -----------------------------------------------------------------------------

@dataclass(frozen=True)
class Head:
    """The anchor: how many lines the log had after the last append, the last line's hash, size."""

    count: int
    hash: str
    size: int


@dataclass(frozen=True)
class AuditProblem:
    line: int  # 1-based line number in the file as it is now (0: the file as a whole)
    kind: str  # edited | removed | reordered | malformed | torn | anchor
    message: str


@dataclass
class AuditReport:
    lines: int
    head: Head | None
    problems: list[AuditProblem] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


@dataclass(frozen=True)
class _Seen:
    """What verify keeps of each line: enough to explain a broken link, not the line."""

    hash: str
    seq: int | None
    prev: str | None


class AuditLog:
    """``audit.log`` and ``audit.head`` in one state directory."""

    def __init__(self, state_dir: Path) -> None:
        self.dir = Path(state_dir)
        self.path = self.dir / LOG_NAME
        self.head_path = self.dir / HEAD_NAME
        self.safe = SafeRoot(self.dir, "the state directory")  # never through a planted symlink

    # -- writing ---------------------------------------------------------------------------
    def append(self, record: dict[str, Any]) -> dict[str, Any]:
        """Append ``record`` (plus ``seq``, ``prev`` and, when needed, ``anomaly``/``repaired``).

        Returns the record as written. Safe against concurrent installers (flock) and against
        a crash at any point (see the module invariants).
        """
        fd = self.safe.open_append([LOG_NAME], 0o640)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            size = os.fstat(fd).st_size
            extra: dict[str, Any] = {}
            last, torn = _tail(fd, size)
            if torn:
                os.ftruncate(fd, size - torn)
                size -= torn
                extra["repaired"] = f"cut a torn final line of {torn} bytes (an earlier run died mid-write)"
            prev = line_hash(last) if last is not None else GENESIS
            last_seq = _seq_of(last) if last is not None else 0
            if last is not None and last_seq is None:
                last_seq = _count_lines(fd, size)
            anomaly = self._anchor_anomaly(fd, size, prev, last_seq or 0)
            if anomaly:
                extra["anomaly"] = anomaly
            full = {**record, **extra, "seq": (last_seq or 0) + 1, "prev": prev}
            line = canonical_json(full)
            if len(line) >= MAX_LINE:
                raise ValueError("audit record too long")  # callers clip their texts
            os.write(fd, line + b"\n")
            os.fsync(fd)
            self._write_head(Head(full["seq"], line_hash(line), size + len(line) + 1))
            return full
        finally:
            os.close(fd)  # releases the flock

    def _anchor_anomaly(self, fd: int, size: int, prev: str, last_seq: int) -> str | None:
        """Why the log disagrees with its head, or None when it agrees (or is one append ahead)."""
        head = self.head()
        if head is None:
            return None if size == 0 else f"{HEAD_NAME} was missing while the log had {last_seq} lines"
        if head.hash == prev and head.size == size:
            return None
        if head.size < size and head.count < last_seq and _line_before(fd, head.size) == head.hash:
            return None  # a crash after an append, before its head update: the line is genuine
        return (f"{HEAD_NAME} recorded {head.count} lines ({head.size} bytes, last {head.hash}) "
                f"but the log had {last_seq} lines ({size} bytes, last {prev}): lines had been "
                "removed or edited")

    def _write_head(self, head: Head) -> None:
        self.safe.atomic_write([HEAD_NAME], canonical_json(
            {"count": head.count, "hash": head.hash, "size": head.size}) + b"\n")

    # -- reading ---------------------------------------------------------------------------
    def head(self) -> Head | None:
        try:
            doc = StateDir(self.dir).audit_head()
        except EdgebundleError:
            return Head(-1, "unreadable", -1)
        return None if doc is None else Head(doc["count"], doc["hash"], doc["size"])

    def lines(self) -> Iterator[tuple[int, bytes]]:
        """(line number, raw bytes including the newline if any), bounded per line."""
        with self.safe.dir([]) as d:
            if d is None:
                return  # no state directory: no log
            try:
                fd = open_regular(d, LOG_NAME, self.path)
            except FileNotFoundError:
                return
        with os.fdopen(fd, "rb") as f:
            n = 0
            while True:
                raw = f.readline(MAX_LINE + 1)
                if not raw:
                    return
                n += 1
                if len(raw) > MAX_LINE:  # skip the rest of an over-long line, report it clipped
                    while raw and not raw.endswith(b"\n"):
                        raw = f.readline(MAX_LINE + 1)
                    yield n, b"\x00overlong"
                    continue
                yield n, raw

    def records(self) -> Iterator[tuple[int, dict[str, Any] | None]]:
        """(line number, record or None for a line that is not a JSON object)."""
        for n, raw in self.lines():
            yield n, _parse(raw.rstrip(b"\n"))

    def verify(self) -> AuditReport:
        """Check the chain and the head; name the first line that breaks each, and how."""
        seen: list[_Seen] = []
        report = AuditReport(0, self.head())
        bad_lines: set[int] = set()
        for n, raw in self.lines():
            complete = raw.endswith(b"\n")
            text = raw[:-1] if complete else raw
            rec = _parse(text)
            if not complete:
                report.notes.append(
                    f"line {n} is incomplete (no newline): an installer died while writing it; "
                    "the next command will cut it off and say so")
                bad_lines.add(n)
                continue
            seen.append(_Seen(line_hash(text), _int(rec, "seq"), _str(rec, "prev")))
            if rec is None:
                report.problems.append(AuditProblem(n, "malformed", (
                    f"line {n} is not a JSON record: it was edited or corrupted")))
                bad_lines.add(n)
            elif isinstance(rec.get("anomaly"), str):
                report.problems.append(AuditProblem(n, "anomaly", (
                    f"line {n} records that when it was written {rec['anomaly']}")))
        report.lines = len(seen)
        by_hash = {s.hash: i + 1 for i, s in enumerate(seen)}
        for i, s in enumerate(seen, start=1):
            if i in bad_lines:
                continue
            expected = seen[i - 2].hash if i > 1 else GENESIS
            if s.prev == expected:
                continue
            problem = self._explain(i, s, seen, by_hash, bad_lines)
            if problem is not None:
                report.problems.append(problem)
        self._check_head(report, seen, by_hash)
        self._check_state_anchor(report, seen)
        report.problems.sort(key=lambda p: (p.line == 0, p.line))
        return report

    @staticmethod
    def _explain(i: int, s: _Seen, seen: list[_Seen], by_hash: dict[str, int],
                 bad_lines: set[int]) -> AuditProblem | None:
        """Say why line ``i``'s ``prev`` does not match the line before it."""
        prev_seq = seen[i - 2].seq if i > 1 else 0
        if s.prev in by_hash and by_hash[s.prev] != i - 1:
            j = by_hash[s.prev]
            return AuditProblem(i, "reordered", (
                f"line {i} (seq {s.seq}) is out of order: it was written after the record now at "
                f"line {j}, not after line {i - 1}"))
        if s.prev == GENESIS and i > 1:
            return AuditProblem(i, "reordered", f"line {i} claims to be the first record of the log")
        if s.seq is not None and prev_seq is not None and s.seq > prev_seq + 1:
            first, last = prev_seq + 1, s.seq - 1
            span = f"seq {first}" if first == last else f"seq {first}..{last}"
            return AuditProblem(i, "removed", (
                f"{last - first + 1} record(s) ({span}) were removed before line {i}"))
        if i - 1 in bad_lines:
            return None  # already reported as malformed
        if i == 1:
            return AuditProblem(1, "removed", "line 1 does not start the chain: records before it were removed")
        return AuditProblem(i - 1, "edited", (
            f"line {i - 1} (seq {seen[i - 2].seq}) was edited: its hash no longer matches the "
            f"prev recorded by line {i}"))

    def _check_state_anchor(self, report: AuditReport, seen: list[_Seen]) -> None:
        """Log and head deleted together: ``installed.json`` and the journals remember the log existed."""
        state = StateDir(self.dir)
        try:
            anchor = state.installed_document().audit
        except EdgebundleError as e:
            report.problems.append(AuditProblem(0, "anchor", f"cannot read the audit anchor: {e.message}"))
            return
        if anchor is not None and len(seen) < anchor.count:
            report.problems.append(AuditProblem(0, "removed", (
                f"installed.json records that {LOG_NAME} had at least {anchor.count} lines at the last install, "
                f"but it has {len(seen)}: the log (and its head) were deleted or cut")))
            return
        if not seen and report.head is None:
            try:
                journals = [n for n in state.safe.listdir(["journal"]) if n.endswith(".jsonl")]
            except EdgebundleError:
                journals = []
            if journals:
                report.problems.append(AuditProblem(0, "removed", (
                    f"{LOG_NAME} and {HEAD_NAME} are missing but the state directory holds "
                    f"{len(journals)} bundle journal(s): the audit log was deleted")))

    def _check_head(self, report: AuditReport, seen: list[_Seen], by_hash: dict[str, int]) -> None:
        """Compare the end of the chain with ``audit.head``: the only proof nothing was cut off."""
        head = report.head
        if head is None:
            if seen:
                report.problems.append(AuditProblem(0, "anchor", (
                    f"{HEAD_NAME} is missing, so removal of lines from the end cannot be ruled out")))
            return
        if head.count < 0:
            report.problems.append(AuditProblem(0, "anchor", f"{HEAD_NAME} is unreadable (edited)"))
            return
        if head.count == 0 and not seen:
            return
        at = by_hash.get(head.hash)
        if at is not None:
            after = len(seen) - at
            if after:
                report.notes.append(
                    f"{after} line(s) after the last anchored one: an installer stopped between "
                    f"writing a line and updating {HEAD_NAME}; the next command re-anchors")
            return
        seqs = [s.seq for s in seen if s.seq is not None]
        last_seq = max(seqs, default=0)
        if last_seq < head.count:
            first = last_seq + 1
            span = f"the record with seq {first} was" if first == head.count else \
                f"the records with seq {first}..{head.count} were"
            report.problems.append(AuditProblem(len(seen) + 1, "removed", (
                f"the log ends at seq {last_seq} but {HEAD_NAME} records {head.count} lines: "
                f"{span} removed from the end")))
            return
        line = next((i for i, s in enumerate(seen, 1) if s.seq == head.count), len(seen))
        report.problems.append(AuditProblem(line, "edited", (
            f"line {line} (seq {head.count}, the last one anchored) was edited: its hash differs "
            f"from the one {HEAD_NAME} records")))


def _parse(text: bytes) -> dict[str, Any] | None:
    try:
        doc = json.loads(text)
    except ValueError:
        return None
    return doc if isinstance(doc, dict) else None


def _int(rec: dict[str, Any] | None, key: str) -> int | None:
    v = rec.get(key) if rec else None
    return v if isinstance(v, int) and not isinstance(v, bool) else None


def _str(rec: dict[str, Any] | None, key: str) -> str | None:
    v = rec.get(key) if rec else None
    return v if isinstance(v, str) else None


def _seq_of(line: bytes) -> int | None:
    return _int(_parse(line), "seq")


def _tail(fd: int, size: int) -> tuple[bytes | None, int]:
    """(last complete line without newline or None, number of torn bytes after it)."""
    if size == 0:
        return None, 0
    end = size
    torn = 0
    if os.pread(fd, 1, size - 1) != b"\n":
        start = _line_start(fd, size)
        torn, end = size - start, start
    if end == 0:
        return None, torn
    start = _line_start(fd, end - 1)
    return os.pread(fd, end - 1 - start, start), torn


def _line_start(fd: int, end: int) -> int:
    """Offset just after the last newline before ``end`` (0 when there is none)."""
    pos = end
    while pos > 0:
        step = min(_TAIL_CHUNK, pos)
        chunk = os.pread(fd, step, pos - step)
        k = chunk.rfind(b"\n")
        if k >= 0:
            return pos - step + k + 1
        pos -= step
        if end - pos > MAX_LINE:
            return pos  # an over-long line: treat it as one line (verify reports it)
    return 0


def _line_before(fd: int, offset: int) -> str | None:
    """Hash of the complete line that ends exactly at ``offset`` (its newline at offset-1)."""
    if offset <= 0 or os.pread(fd, 1, offset - 1) != b"\n":
        return None
    start = _line_start(fd, offset - 1)
    return line_hash(os.pread(fd, offset - 1 - start, start))


def _count_lines(fd: int, size: int) -> int:
    n, pos = 0, 0
    while pos < size:
        chunk = os.pread(fd, 1 << 20, pos)
        if not chunk:
            break
        n += chunk.count(b"\n")
        pos += len(chunk)
    return n


# --- the record of one command -------------------------------------------------------------

def _plain(value: Any) -> Any:
    """A JSON-safe, clipped form of a command parameter."""
    if isinstance(value, (bool, int, float)) or value is None:
        return value
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value[:50]]
    return clip(str(value), 500)


def command_record(command: str, params: dict[str, Any], notes: dict[str, Any], outcome: str,
                   exit_code: int, error: BaseException | None, operator: str) -> dict[str, Any]:
    """The fields of one audit line (``seq`` and ``prev`` are added by :meth:`AuditLog.append`)."""
    err = None
    if error is not None:
        err = {"kind": type(error).__name__, "message": clip(str(error))}
    bundle = notes.get("bundle")
    return {
        "time": now_iso(),
        "operator": clip(operator, 200),
        "command": command,
        "params": {k: _plain(v) for k, v in sorted(params.items()) if k not in _SECRET_PARAMS},
        "bundle": bundle or notes.get("bundle_claimed"),
        "bundleVerified": bool(bundle),
        "plan": notes.get("plan"),
        "outcome": outcome,
        "exitCode": exit_code,
        "error": err,
        "host": socket.gethostname(),
        "pid": os.getpid(),
    }


#: Parameters never copied into the log (paths to secrets are fine; values are not).
_SECRET_PARAMS = frozenset({"passphrase", "password", "token"})


# --- the hook every installer verb runs through ----------------------------------------------

#: Verbs that only read and so leave no line (everything else is recorded, new verbs included).
NOT_AUDITED = frozenset({"status", "history", "audit"})


def outcome_of(exit_code: int) -> str:
    """The word an audit line uses for an exit status (docs/EXIT_CODES.md)."""
    return {0: "ok", 3: "pending", 4: "refused", 130: "interrupted"}.get(exit_code, "error")


def audited(cmd: click.Command) -> None:
    """Wrap ``cmd`` so that every run appends one line to its site's audit log.

    Used as ``register_verbs(main, commands, wrap=audited)``. The wrapper never changes what the
    command does or prints; when the line cannot be written it says so on stderr and a command
    that had succeeded exits 1 (an unrecorded change must not look like a clean run).
    """
    if isinstance(cmd, click.Group) or cmd.name in NOT_AUDITED or cmd.callback is None:
        return
    inner = cmd.callback
    name = cmd.name or "?"

    @functools.wraps(inner)
    def run(**kwargs: Any) -> Any:
        outcome, code, error = "ok", 0, None
        token = clikit.last_error.set(None)
        try:
            with collecting() as notes:
                try:
                    return inner(**kwargs)
                except SystemExit as e:
                    code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
                    outcome, error = outcome_of(code), clikit.last_error.get()
                    raise
                except click.exceptions.Exit as e:
                    code = e.exit_code
                    outcome = outcome_of(code)
                    raise
                except click.ClickException as e:
                    code, outcome, error = e.exit_code, "error", e
                    raise
                except KeyboardInterrupt as e:
                    code, outcome, error = 130, "interrupted", e
                    raise
                except BaseException as e:
                    code, outcome, error = 1, "crash", e
                    raise
                finally:
                    failed_to_record = not _record(name, kwargs, notes, outcome, code, error)
                    if failed_to_record and code == 0 and outcome == "ok":
                        raise SystemExit(1)
        finally:
            clikit.last_error.reset(token)

    cmd.callback = run


def _record(command: str, params: dict[str, Any], notes: dict[str, Any], outcome: str,
            code: int, error: BaseException | None) -> bool:
    """Append the line for one run; False (after saying why on stderr) when it could not be."""
    state_dir = _state_dir(params, notes)
    if state_dir is None:
        return True  # no site could be read: the command itself already failed on that
    if not notes.get("bundle") and params.get("bundle") is not None:
        claimed = _claimed_root(Path(str(params["bundle"])))
        notes["bundle_claimed"] = claimed
        if claimed and outcome == "ok" and (state_dir / "bundles" / claimed.split(":", 1)[1] / "root.json").exists():
            notes["bundle"] = claimed  # the run succeeded and the state keeps this root as verified
    operator = str(params.get("operator") or operator_name())
    try:
        AuditLog(state_dir).append(command_record(command, params, notes, outcome, code, error, operator))
        return True
    except Exception as e:  # noqa: BLE001 (any failure to record must be reported, not raised over)
        click.echo(f"error: could not append to the audit log in {state_dir}: {e}", err=True)
        return False


def _state_dir(params: dict[str, Any], notes: dict[str, Any]) -> Path | None:
    """Where this run's site keeps its state: noted by the command, or read from ``--site``."""
    if notes.get("state_dir"):
        return Path(notes["state_dir"])
    if params.get("site_path"):
        try:
            return resolve_site(params["site_path"], params.get("registry_override"),
                                params.get("models_root_override"),
                                params.get("state_dir_override")).state_dir
        except Exception:  # noqa: BLE001 (an unreadable site file is the command's error to report)
            return None
    if params.get("state_dir"):
        return Path(params["state_dir"]).resolve()
    return None


def _claimed_root(bundle: Path) -> str | None:
    """Digest of the root a bundle *carries*, verified or not (so refusals name the bundle).

    Only the root envelope is read (bounded); any failure leaves the field empty.
    """
    try:
        return sha256_bytes(root_envelope(open_source(bundle)).document())
    except Exception:  # noqa: BLE001 (a hostile or broken bundle simply has no claimed root)
        return None
