"""Round-2 site-side attacks: a NAS root and a state directory that are not clean, and hostile media.

Each :class:`SiteAttack` plants something at a site (a symbolic link into a *victim* directory
outside the site, a FIFO, a file where a directory belongs, tampered bytes, a corrupt document)
and names the command that meets it, the exit code and the message that must name the problem.
The test (tests/test_hostile_site.py) checks the refusal, that the victim directory is unchanged
(nothing written outside the NAS root and the state directory) and that no model version became
visible that was not there before.

Families (docs/SECURITY.md has the table): ``nas`` (links, files and FIFOs below the models root,
tampered staged versions), ``state`` (links and special files in the state directory),
``state-doc`` (corrupt state documents, a deleted audit log), ``media`` (FIFOs, devices and
directories where a bundle, a part or a signature belongs), ``revisions`` (corrupt or planted
``revisions/<N>.json``, read by ``installer history``) and ``commit`` (a planted or corrupt
stage commit record, ``stage-commit.json``, which stage and status finish before anything else).
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

SITE_FAMILIES = ("nas", "state", "state-doc", "media", "revisions", "commit")


@dataclass
class Scene:
    """One site under attack: its directories, the victim outside it, and the genuine bundle."""

    site: Path  # site.yaml
    nas: Path
    state: Path
    victim: Path
    bundle: Path
    root_hex: str
    models: dict[str, tuple[str, str, str]]  # kind -> (kind dir, name, version) of the bundle's models
    key: Path  # the bundle's signing key (to split it into signed parts)

    def version_dir(self, kind: str) -> Path:
        kdir, name, version = self.models[kind]
        return self.nas / kdir / name / version

    def link(self, at: Path, to: Path) -> None:
        at.parent.mkdir(parents=True, exist_ok=True)
        if at.is_dir() and not at.is_symlink():
            shutil.rmtree(at)
        elif at.exists() or at.is_symlink():
            at.unlink()
        at.symlink_to(to)

    def fifo(self, at: Path) -> None:
        at.parent.mkdir(parents=True, exist_ok=True)
        if at.exists() or at.is_symlink():
            at.unlink()
        os.mkfifo(at)

    def file(self, at: Path, data: bytes = b"planted\n") -> None:
        at.parent.mkdir(parents=True, exist_ok=True)
        at.write_bytes(data)


@dataclass(frozen=True)
class SiteAttack:
    family: str
    name: str
    plant: Callable[[Scene], None]
    args: Callable[[Scene], list[str]]  # the installer command line
    expect: str  # regex over stdout + stderr
    exit_code: int = 1
    staged_first: bool = False  # stage the genuine bundle before planting
    env: dict[str, str] = field(default_factory=dict)

    @property
    def id(self) -> str:
        return f"{self.family}/{self.name}"


def stage(s: Scene) -> list[str]:
    return ["stage", str(s.bundle), "--site", str(s.site)]


def verify(s: Scene) -> list[str]:
    return ["verify", str(s.bundle), "--site", str(s.site)]


def status_verify(s: Scene) -> list[str]:
    return ["status", "--site", str(s.site), "--verify"]


def audit_verify(s: Scene) -> list[str]:
    return ["audit", "verify", "--site", str(s.site)]


def _forget_install(s: Scene) -> None:
    """What an attacker who wants a re-stage to skip the NAS check would remove."""
    (s.state / "installed.json").unlink(missing_ok=True)
    shutil.rmtree(s.state / "journal", ignore_errors=True)


def _tamper(kind: str, forget: bool = True, marker: bool = True) -> Callable[[Scene], None]:
    """Overwrite bytes of a staged model file, same size (optionally also drop its marker)."""
    def plant(s: Scene) -> None:
        vdir = s.version_dir(kind)
        target = max((p for p in vdir.rglob("*") if p.is_file() and p.name != ".edgebundle.json"),
                     key=lambda p: p.stat().st_size)
        with open(target, "r+b") as f:
            f.seek(target.stat().st_size // 2)
            f.write(b"\x00TAMPERED\x00")
        if not marker:
            (vdir / ".edgebundle.json").unlink()
        if forget:
            _forget_install(s)
    return plant


def _replace_staged(kind: str, how: str) -> Callable[[Scene], None]:
    def plant(s: Scene) -> None:
        vdir = s.version_dir(kind)
        target = sorted(p for p in vdir.rglob("*") if p.is_file() and p.name != ".edgebundle.json")[0]
        if how == "link":
            (s.victim / "same-size").write_bytes(b"\0" * target.stat().st_size)
            s.link(target, s.victim / "same-size")
        elif how == "fifo":
            s.fifo(target)
        elif how == "extra":
            s.file(vdir / "extra.bin")
        elif how == "dirlink":
            sub = next(p for p in vdir.iterdir() if p.is_dir())
            shutil.copytree(sub, s.victim / "copied-sub")
            s.link(sub, s.victim / "copied-sub")
        _forget_install(s)
    return plant


def nas_attacks() -> list[SiteAttack]:
    out: list[SiteAttack] = []
    for kdir in ("llm", "embeddings", "indices"):
        out.append(SiteAttack("nas", f"{kdir} is a symlink out of the NAS",
                              lambda s, k=kdir: s.link(s.nas / k, s.victim), stage,
                              rf"nas/{kdir} is a symbolic link; refusing to follow it"))
        out.append(SiteAttack("nas", f"{kdir} is a regular file",
                              lambda s, k=kdir: s.file(s.nas / k), stage,
                              rf"nas/{kdir} is a regular file, expected a directory"))
        out.append(SiteAttack("nas", f"{kdir} is a FIFO", lambda s, k=kdir: s.fifo(s.nas / k), stage,
                              rf"nas/{kdir} is a FIFO, expected a directory"))
    for kind in ("llm", "embedding", "index"):
        out.append(SiteAttack("nas", f"{kind} model name dir is a symlink out of the NAS",
                              lambda s, k=kind: s.link(s.version_dir(k).parent, s.victim), stage,
                              r"is a symbolic link; refusing to follow it"))
        out.append(SiteAttack("nas", f"{kind} model name dir is a regular file",
                              lambda s, k=kind: s.file(s.version_dir(k).parent), stage,
                              r"is a regular file, expected a directory"))
        out.append(SiteAttack("nas", f"{kind} version dir is a symlink out of the NAS",
                              lambda s, k=kind: s.link(s.version_dir(k), s.victim), stage,
                              r"refusing to overwrite .* exists and is not a directory"))
        out.append(SiteAttack("nas", f"{kind} version dir is a regular file",
                              lambda s, k=kind: s.file(s.version_dir(k)), stage,
                              r"refusing to overwrite .* exists and is not a directory"))
        out.append(SiteAttack("nas", f"{kind} staged bytes tampered, install record and journal removed",
                              _tamper(kind), stage, r"refusing to overwrite .* has digest sha256:",
                              staged_first=True))
        out.append(SiteAttack("nas", f"{kind} staged bytes tampered, marker removed too",
                              _tamper(kind, marker=False), stage, r"refusing to overwrite .* has digest sha256:",
                              staged_first=True))
        out.append(SiteAttack("nas", f"{kind} staged bytes tampered, status --verify",
                              _tamper(kind, forget=False), status_verify,
                              r"staged model version\(s\) differ from what was signed: .* has digest", exit_code=4,
                              staged_first=True))
        out.append(SiteAttack("nas", f"{kind} staged file replaced by a symlink out of the NAS",
                              _replace_staged(kind, "link"), stage, r"is not a regular file \(a link or special",
                              staged_first=True))
        out.append(SiteAttack("nas", f"{kind} staged file replaced by a FIFO",
                              _replace_staged(kind, "fifo"), stage, r"is not a regular file \(a link or special",
                              staged_first=True))
        out.append(SiteAttack("nas", f"{kind} staged version gains a file",
                              _replace_staged(kind, "extra"), stage, r"extra file\(s\) extra\.bin",
                              staged_first=True))
    out.append(SiteAttack("nas", "embedding sub-directory replaced by a symlink out of the NAS",
                          _replace_staged("embedding", "dirlink"), stage, r"is not a regular file \(a link or special",
                          staged_first=True))
    out.append(SiteAttack("nas", "models root does not exist", lambda s: shutil.rmtree(s.nas), stage,
                          r"models root .* does not exist or is not a directory", exit_code=2))
    return out


def _state_link(rel: str, is_dir: bool = False) -> Callable[[Scene], None]:
    def plant(s: Scene) -> None:
        target = s.victim / ("vdir" if is_dir else "vfile")
        if is_dir:
            target.mkdir(exist_ok=True)
        else:
            target.write_bytes(b"victim content\n")
        s.link(s.state / rel.replace("HEX", s.root_hex), target)
    return plant


def _state_fifo(rel: str) -> Callable[[Scene], None]:
    return lambda s: s.fifo(s.state / rel.replace("HEX", s.root_hex))


def _state_dir(rel: str) -> Callable[[Scene], None]:
    return lambda s: (s.state / rel).mkdir(parents=True)


def state_attacks() -> list[SiteAttack]:
    out = []
    links = [("lock", False, r"state/lock is a symbolic link"),  # (lock: taken by stage, not verify)
             ("audit.log", False, r"could not append to the audit log .*audit\.log is a symbolic link"),
             ("audit.head", False, r"could not append to the audit log .*audit\.head is a symbolic link"),
             ("installed.json", False, r"installed\.json is a symbolic link"),
             ("journal", True, r"state/journal is a symbolic link; refusing to follow it"),
             ("journal/HEX.jsonl", False, r"\.jsonl is a symbolic link"),
             ("bundles", True, r"state/bundles is a symbolic link; refusing to follow it"),
             ("bundles/HEX", True, r"state/bundles/[0-9a-f]{64} is a symbolic link; refusing to follow it")]
    for rel, is_dir, expect in links:
        out.append(SiteAttack("state", f"{rel.replace('HEX', '<root>')} is a symlink out of the state dir",
                              _state_link(rel, is_dir), stage if rel == "lock" else verify, expect))
    for rel, expect in (("lock", r"state/lock is a FIFO"),
                        ("audit.log", r"could not append to the audit log .*audit\.log is a FIFO"),
                        ("installed.json", r"installed\.json is a FIFO"),
                        ("journal/HEX.jsonl", r"\.jsonl is a FIFO")):
        out.append(SiteAttack("state", f"{rel.replace('HEX', '<root>')} is a FIFO", _state_fifo(rel),
                              stage if rel == "lock" else verify, expect))
    for rel, expect in (("lock", r"state/lock is a directory"), ("installed.json", r"installed\.json is a directory"),
                        ("audit.log", r"audit\.log is a directory")):
        out.append(SiteAttack("state", f"{rel} is a directory", _state_dir(rel), stage if rel == "lock" else verify,
                              expect))
    out.append(SiteAttack("state", "journal is a regular file", lambda s: s.file(s.state / "journal"), verify,
                          r"state/journal is a regular file, expected a directory"))
    out.append(SiteAttack("state", "bundles is a regular file", lambda s: s.file(s.state / "bundles"), verify,
                          r"state/bundles is a regular file, expected a directory"))
    return out


def _installed(data: bytes) -> Callable[[Scene], None]:
    return lambda s: s.file(s.state / "installed.json", data)


DIGEST = "sha256:" + "ab" * 32


def _entry(**over: object) -> bytes:
    entry = {"name": "rag-edge", "version": "0.9.0", "root": DIGEST, "signers": []}
    entry.update(over)
    return json.dumps({"bundles": [{k: v for k, v in entry.items() if v is not None}]}).encode()


def state_doc_attacks() -> list[SiteAttack]:
    bad = r"state document .*installed\.json "
    docs = [("not JSON", b"{", bad + r"is not valid JSON"),
            ("a list", b"[]", bad + r"is malformed at \(top level\)"),
            ("a string", b'"bundles"', bad + r"is malformed at \(top level\)"),
            ("null", b"null", bad + r"is malformed at \(top level\)"),
            ("bundles is an object", b'{"bundles": {}}', bad + r"is malformed at bundles"),
            ("an entry without root", _entry(root=None), bad + r"is malformed at bundles\.0\.root"),
            ("a number for a version", _entry(version=2), bad + r"is malformed at bundles\.0\.version"),
            ("a boolean for a name", _entry(name=True), bad + r"is malformed at bundles\.0\.name"),
            ("a root that is not a digest", _entry(root="sha256:xyz"), bad + r"is malformed at bundles\.0\.root"),
            ("signers not strings", _entry(signers=[1, 2]), bad + r"is malformed at bundles\.0\.signers\.0"),
            ("an unknown top-level key", b'{"bundles": [], "owned": 1}', bad + r"is malformed at owned"),
            ("an audit anchor of the wrong type", b'{"bundles": [], "audit": {"count": "9", "hash": "x"}}',
             bad + r"is malformed at audit\.count"),
            ("nested 100000 deep", b'{"bundles":' + b"[" * 100_000 + b"]" * 100_000 + b"}",
             bad + r"nests deeper than 64 levels"),
            ("not UTF-8", b'{"bundles": ["\xff"]}', bad + r"is not valid JSON"),
            ("an empty file", b"", bad + r"is not valid JSON")]
    out = [SiteAttack("state-doc", f"installed.json is {label}", _installed(data), verify,
                      expect + r"(.|\n)*restore .*installed\.json from a backup") for label, data, expect in docs]

    def drop_log(s: Scene, head: bool = True, installed: bool = False) -> None:
        (s.state / "audit.log").unlink()
        if head:
            (s.state / "audit.head").unlink()
        if installed:
            (s.state / "installed.json").unlink(missing_ok=True)

    journals = r"audit\.log and audit\.head are missing but the state directory holds 1 bundle journal"
    out.append(SiteAttack("state-doc", "audit.log and audit.head deleted after a stage", drop_log, audit_verify,
                          journals, exit_code=4, staged_first=True))
    out.append(SiteAttack("state-doc", "audit.log, audit.head and installed.json deleted",
                          lambda s: drop_log(s, installed=True), audit_verify,
                          journals, exit_code=4, staged_first=True))

    def empty_log(s: Scene) -> None:
        (s.state / "audit.log").write_bytes(b"")
        (s.state / "audit.head").unlink()
    out.append(SiteAttack("state-doc", "audit.log emptied and audit.head deleted", empty_log, audit_verify,
                          journals, exit_code=4, staged_first=True))
    return out


def media_attacks() -> list[SiteAttack]:
    def bundle_fifo(s: Scene) -> None:
        s.bundle = s.victim.parent / "bundle-fifo.tar"
        os.mkfifo(s.bundle)

    def parts(edit: Callable[[Scene, Path], None]) -> Callable[[Scene], None]:
        """Split the genuine bundle into signed parts on 'media', then damage the media."""
        def plant(s: Scene) -> None:
            from bundler.split import split_bundle
            from edgebundle.signing import load_private_key

            media = s.victim.parent / "media"
            split_bundle(s.bundle, media, 1024 * 1024, [load_private_key(s.key)])
            s.bundle = media
            edit(s, media)
        return plant

    def part(n: int) -> Callable[[Path], Path]:
        return lambda media: next(media.glob(f"*.tar.part{n:03d}"))

    def index(media: Path) -> Path:
        return next(media.glob("*.parts.json"))

    def named_index(edit: Callable[[Scene, Path], None]) -> Callable[[Scene, Path], None]:
        """Damage the part index, and name it (not the media directory) as the bundle."""
        def then_name(s: Scene, media: Path) -> None:
            path = index(media)
            edit(s, media)
            s.bundle = path
        return then_name

    def swap(where: Callable[[Path], Path], how: str) -> Callable[[Scene, Path], None]:
        def edit(s: Scene, media: Path) -> None:
            p = where(media)
            p.unlink()
            if how == "fifo":
                os.mkfifo(p)
            elif how == "dir":
                p.mkdir()
            elif how == "link":
                p.symlink_to(s.victim / "secret")
            elif how == "device":
                os.symlink("/dev/zero", p)
        return edit

    media = []
    for label, where, pattern in (("part000", part(0), r"part000"), ("part001", part(1), r"part001")):
        for how, kind in (("fifo", "is not a regular file; refused"), ("dir", "is not a regular file; refused"),
                          ("link", "is not a regular file; refused"), ("device", "is not a regular file; refused")):
            media.append(SiteAttack("media", f"{label} is a {how}", parts(swap(where, how)), verify,
                                    rf"{pattern}.*{kind}", exit_code=4))
    for how, expect in (("fifo", r"parts\.json is a FIFO, not a regular file"),
                        ("dir", r"parts\.json has no edgebundle/root\.dsse\.json"),
                        ("device", r"parts\.json is a device, not a regular file")):
        media.append(SiteAttack("media", f"the part index is a {how}", parts(named_index(swap(index, how))), verify,
                                expect, exit_code=4))
    return [
        *media,
        SiteAttack("media", "the bundle is a FIFO", bundle_fifo, verify,
                   r"bundle file .*bundle-fifo\.tar is a FIFO, not a regular file; refused", exit_code=4),
        SiteAttack("media", "the bundle is a character device",
                   lambda s: setattr(s, "bundle", Path("/dev/zero")), verify,
                   r"bundle file /dev/zero is a device, not a regular file; refused", exit_code=4),
    ]


def status(s: Scene) -> list[str]:
    return ["status", "--site", str(s.site)]


def history(s: Scene) -> list[str]:
    return ["history", "--site", str(s.site)]


def status_attacks() -> list[SiteAttack]:
    """``installer status`` refuses (naming the path) what it used to skip silently."""
    out = []
    for kdir in ("llm", "embeddings", "indices"):
        out.append(SiteAttack("nas", f"{kdir} is a symlink out of the NAS, status",
                              lambda s, k=kdir: s.link(s.nas / k, s.victim), status,
                              rf"nas/{kdir} is a symbolic link; refusing to follow it"))
    for kind in ("llm", "embedding", "index"):
        out.append(SiteAttack("nas", f"{kind} model name dir is a symlink out of the NAS, status",
                              lambda s, k=kind: s.link(s.version_dir(k).parent, s.victim), status,
                              r"is a symbolic link; refusing to follow it", staged_first=True))
    out.append(SiteAttack("nas", "llm is a regular file, status", lambda s: s.file(s.nas / "llm"), status,
                          r"nas/llm is a regular file, expected a directory"))
    return out


#: A well-formed revision record (what installer/revisions.py writes); attacks edit a copy.
REVISION = {"revision": 1, "status": "deployed", "trigger": "apply", "rollbackOf": None, "site": "test-site",
            "cluster": {"kind": "k3s-manifests-dir", "path": "/var/lib/rancher/k3s/server/manifests"},
            "bundle": {"name": "rag-edge", "version": "1.0.0", "root": "sha256:" + "ab" * 32},
            "planHash": "sha256:" + "cd" * 32, "operator": "alice", "startedAt": "2026-01-01T00:00:00Z",
            "finishedAt": "2026-01-01T00:01:00Z", "health": "not-watched", "objects": [], "images": {},
            "models": {}, "summary": {"create": 3, "update": 0}}


def _revision(data: bytes | None = None, n: int = 1, **over: object) -> Callable[[Scene], None]:
    def plant(s: Scene) -> None:
        rec = {k: v for k, v in {**REVISION, **over}.items() if v is not _DROP}
        s.file(s.state / "revisions" / f"{n}.json", data if data is not None else json.dumps(rec).encode())
    return plant


_DROP = object()


def revision_attacks() -> list[SiteAttack]:
    bad = r"state document .*revisions/1\.json "
    docs: list[tuple[str, Callable[[Scene], None], str]] = [
        ("not JSON", _revision(b"{"), bad + r"is not valid JSON"),
        ("empty", _revision(b""), bad + r"is not valid JSON"),
        ("a list", _revision(b"[]"), bad + r"is malformed at \(top level\)"),
        ("null", _revision(b"null"), bad + r"is malformed at \(top level\)"),
        ("not UTF-8", _revision(b'{"revision": "\xff\xfe"}'), bad + r"is not valid JSON"),
        ("100 000 deep", _revision(b"[" * 100_000 + b"]" * 100_000), bad + r"nests deeper than"),
        ("an unknown status", _revision(status="hacked"), bad + r"is malformed at status"),
        ("a string for the number", _revision(revision="1"), bad + r"is malformed at revision"),
        ("a negative number", _revision(revision=-1, n=1), bad + r"is malformed at revision"),
        ("another revision's number", _revision(revision=2), bad + r"says it is revision 2, not 1"),
        ("a bundle without root", _revision(bundle={"name": "x", "version": "1"}),
         bad + r"is malformed at bundle\.root"),
        ("objects an object", _revision(objects={}), bad + r"is malformed at objects"),
        ("an unknown key", _revision(evil=True), bad + r"is malformed at evil"),
        ("a plan hash that is not a digest", _revision(planHash="sha256:../../x"), bad + r"is malformed at planHash"),
        ("a summary of strings", _revision(summary={"create": "3"}), bad + r"is malformed at summary\.create"),
        ("no status", _revision(status=_DROP), bad + r"is malformed at status"),
    ]
    out = [SiteAttack("revisions", name, plant, history, expect) for name, plant, expect in docs]
    out += [
        SiteAttack("revisions", "revisions is a symlink out of the state dir", _state_link("revisions", True),
                   history, r"state/revisions is a symbolic link; refusing to follow it"),
        SiteAttack("revisions", "a revision file is a symlink out of the state dir", _state_link("revisions/1.json"),
                   history, r"revisions/1\.json is a symbolic link"),
        SiteAttack("revisions", "a revision file is a FIFO", _state_fifo("revisions/1.json"), history,
                   r"revisions/1\.json is a FIFO"),
        SiteAttack("revisions", "revisions is a regular file", lambda s: s.file(s.state / "revisions"), history,
                   r"state/revisions is a regular file, expected a directory"),
    ]
    return out


def _commit_record(**over: object) -> Callable[[Scene], None]:
    """Plant a stage commit record (as a killed stage would leave one), edited by ``over``."""
    def plant(s: Scene) -> None:
        kdir, name, version = s.models["index"]
        rec = {"_type": "edgebundle.stage-commit", "root": "sha256:" + s.root_hex, "modelsRoot": str(s.nas),
               "state": "commit",
               "versions": [{"kindDir": kdir, "name": name, "version": version, "partial": f".{version}.partial-x"}]}
        for k, v in over.items():
            if k in ("kindDir", "name", "version", "partial"):
                rec["versions"][0][k] = v  # type: ignore[index]
            else:
                rec[k] = v
        s.file(s.state / "stage-commit.json", json.dumps(rec).encode())
    return plant


def commit_attacks() -> list[SiteAttack]:
    bad = r"state document .*stage-commit\.json "
    cases: list[tuple[str, Callable[[Scene], None], str]] = [
        ("not JSON", lambda s: s.file(s.state / "stage-commit.json", b"{"), bad + r"is not valid JSON"),
        ("a partial name climbing out", _commit_record(partial="../../../victim"),
         bad + r"is malformed at versions\.0\.partial: .*not a single path component"),
        ("a model name climbing out", _commit_record(name=".."), bad + r"is malformed at versions\.0\.name"),
        ("a version with a slash", _commit_record(version="1/../../x"), bad + r"is malformed at versions\.0\.version"),
        ("an unknown kind dir", _commit_record(kindDir="../victim"), bad + r"is malformed at versions\.0\.kindDir"),
        ("a root that is not a digest", _commit_record(root="sha256:zz"), bad + r"is malformed at root"),
        ("an unknown state", _commit_record(state="maybe"), bad + r"is malformed at state"),
        ("no versions", _commit_record(versions=[]), bad + r"is malformed at versions"),
        ("another models root", _commit_record(modelsRoot="/elsewhere"),
         r"stage-commit\.json is an unfinished stage commit for models root /elsewhere"),
    ]
    out = []
    for name, plant, expect in cases:
        out.append(SiteAttack("commit", f"{name}, stage", plant, stage, expect))
        out.append(SiteAttack("commit", f"{name}, status", plant, status, expect))
    out += [
        SiteAttack("commit", "the record is a symlink out of the state dir", _state_link("stage-commit.json"), stage,
                   r"stage-commit\.json is a symbolic link"),
        SiteAttack("commit", "the record is a FIFO", _state_fifo("stage-commit.json"), stage,
                   r"stage-commit\.json is a FIFO"),
        SiteAttack("commit", "the record is a directory", _state_dir("stage-commit.json"), status,
                   r"stage-commit\.json is a directory"),
    ]
    return out


def all_site_attacks() -> list[SiteAttack]:
    attacks = [*nas_attacks(), *status_attacks(), *state_attacks(), *state_doc_attacks(), *media_attacks(),
               *revision_attacks(), *commit_attacks()]
    ids = [a.id for a in attacks]
    assert len(ids) == len(set(ids)), sorted({i for i in ids if ids.count(i) > 1})
    return attacks


__all__ = ["REVISION", "SITE_FAMILIES", "Scene", "SiteAttack", "all_site_attacks"]
