"""Field media: put a bundle on a mounted stick, prove it from the device, make the stick self-sufficient.

``bundle write-media BUNDLE DEST`` writes, in this order: the bundle (its parts and signed part
index, or one tar), then an offline installer (``wheelhouse/`` with ``edgebundle`` and
every dependency for the target platforms, and ``bootstrap.sh``), the runbook ``README.txt`` and
``SHA256SUMS``. docs/MEDIA.md is the user's guide.

Invariants:
- Every file is written to a temporary name on the media, fsynced, dropped from the page cache
  (``posix_fadvise(DONTNEED)``), read back from the device and hashed; only a file whose bytes
  read back right is renamed to its final name. A pulled stick never leaves a file that looks
  complete, and a file with a final name was proven at least once.
- The expected hash of a part comes from the signed part index, so a corrupt source part is
  refused too. A file already on the media with the right size and hash is kept (re-run = resume).
- Anything that can fail without touching the media (reading the bundle, building the
  wheelhouse, free space, FAT32's 4 GiB cap) is checked before the first byte is written.
- The media is only read by the site side: bootstrap.sh creates its venv elsewhere.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from edgebundle.digest import HashingWriter, fsync_dir, hash_file, hash_stream, iter_chunks
from edgebundle.errors import EdgebundleError, UsageError, VerificationError
from bundler.split import bundle_file_name, bundle_tar_size, write_bundle_tar
from edgebundle.parts import FAT32_MAX, INDEX_SUFFIX, PartIndex, PartsSource
from edgebundle.progress import Progress, human
from edgebundle.root import Root, parse_root
from edgebundle.verify import root_envelope
from edgebundle.parts import open_source
from edgebundle.sources import BundleSource, TarSource

README = "README.txt"
BOOTSTRAP = "bootstrap.sh"
WHEELHOUSE = "wheelhouse"
SUMS = "SHA256SUMS"
VENV_NAME = "edgebundle-venv"
DEFAULT_PLATFORMS = ("manylinux2014_x86_64",)
DEFAULT_PYTHONS = ("3.11", "3.12")
#: ``--target-platform`` shorthands.
PLATFORM_ALIASES = {"x86_64": "manylinux2014_x86_64", "amd64": "manylinux2014_x86_64",
                    "aarch64": "manylinux2014_aarch64", "arm64": "manylinux2014_aarch64"}
_ARCHES = ("x86_64", "aarch64", "i686", "ppc64le", "s390x", "armv7l")
#: The project's own packages, copied out of the source tree to build the edgebundle wheel.
PACKAGES = ("bundler", "installer")
_SOURCE_FILES = ("pyproject.toml", "setup.cfg", "setup.py", "README.md", "LICENSE", "MANIFEST.in")
#: Bundle files another bundle may have left on the media.
_BUNDLE_FILE = re.compile(r".+(\.parts\.json|\.parts\.sig\.json|\.tar|\.tar\.part\d{3})")


class MediaVerifyError(VerificationError):
    """A file read back from the media does not match what was written (or what is signed)."""


class MediaError(EdgebundleError):
    """The media cannot be written (full, read-only, I/O error, FAT32 file-size cap)."""


# --- targets and the wheelhouse ----------------------------------------------------------

@dataclass(frozen=True)
class Target:
    """A platform the offline installer must run on: a pip platform tag and a CPython version."""

    platform: str
    python: str

    @property
    def machine(self) -> str:
        """What ``platform.machine()`` says on such a host."""
        return next(a for a in _ARCHES if self.platform.endswith(a))

    def __str__(self) -> str:
        return f"cp{self.python} {self.platform}"


def parse_targets(platforms: tuple[str, ...] | list[str], pythons: tuple[str, ...] | list[str]) -> list[Target]:
    """Every (platform, python) pair, validated; aliases like ``aarch64`` expanded."""
    out = []
    for plat in platforms or DEFAULT_PLATFORMS:
        plat = PLATFORM_ALIASES.get(plat, plat)
        if not re.fullmatch(r"(manylinux\d*|manylinux_\d+_\d+|musllinux_\d+_\d+)_[a-z0-9_]+", plat) \
                or not any(plat.endswith(a) for a in _ARCHES):
            raise UsageError(f"--target-platform {plat!r} is not a Linux wheel platform tag",
                             hint="use manylinux2014_x86_64 (default) or manylinux2014_aarch64")
        for py in pythons or DEFAULT_PYTHONS:
            if not re.fullmatch(r"3\.\d{1,2}", py):
                raise UsageError(f"--python-version {py!r} is not like 3.11")
            out.append(Target(plat, py))
    return out


def default_wheel_cache() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "edgebundle" / "wheelhouse"


def find_source_tree() -> Path | None:
    """The edgebundle source tree this code runs from, if it runs from one (not from a wheel)."""
    tree = Path(__file__).resolve().parents[1]
    ok = (tree / "pyproject.toml").is_file() and all((tree / p / "__init__.py").is_file() for p in PACKAGES)
    return tree if ok else None


def _pip(args: list[str], what: str, hint: str) -> None:
    proc = subprocess.run([sys.executable, "-m", "pip", *args], capture_output=True, text=True)
    if proc.returncode != 0:
        tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-8:])
        raise MediaError(f"{what} failed (pip exit {proc.returncode}):\n{tail}", hint=hint)


def build_own_wheel(source_tree: Path, out_dir: Path) -> Path:
    """Build the edgebundle wheel from a clean copy of the source tree (the tree is not touched)."""
    with tempfile.TemporaryDirectory(prefix="edgebundle-src-") as tmp:
        src = Path(tmp) / "src"
        src.mkdir()
        for name in _SOURCE_FILES:
            if (source_tree / name).is_file():
                shutil.copy2(source_tree / name, src / name)
        for pkg in PACKAGES:
            shutil.copytree(source_tree / pkg, src / pkg,
                            ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        # With setuptools and wheel at hand, build with them: no build environment from an index.
        local = all(importlib.util.find_spec(m) is not None for m in ("setuptools", "wheel"))
        isolation = ["--no-build-isolation"] if local else []
        _pip(["wheel", "--no-deps", "--quiet", *isolation, "-w", str(out_dir), str(src)],
             f"building the edgebundle wheel from {source_tree}",
             "the build host needs setuptools (from the package index); or pass --edgebundle-wheel WHEEL")
    wheels = sorted(out_dir.glob("edgebundle-*.whl"))
    if len(wheels) != 1:
        raise MediaError(f"pip built {len(wheels)} edgebundle wheels in {out_dir}, expected one")
    return wheels[0]


def _download(own: Path, t: Target, dest: Path, *, index: bool, find_links: Path) -> list[str]:
    args = ["download", "--quiet", "--dest", str(dest), "--only-binary=:all:", "--platform", t.platform,
            "--python-version", t.python, "--implementation", "cp", "--find-links", str(find_links)]
    if not index:
        args.append("--no-index")
    return args + [str(own)]


def build_wheelhouse(out: Path, targets: list[Target], *, cache: Path, own_wheel: Path | None = None,
                     source_tree: Path | None = None, log: Callable[[str], None] = lambda s: None) -> Path:
    """Fill ``out`` with the edgebundle wheel and every dependency's wheel for each target.

    Dependencies are resolved from ``cache`` without an index first; only when that fails does
    pip download into ``cache`` (the build host's index, its own pip configuration), so a rerun
    needs no network. Returns the edgebundle wheel in ``out``.
    """
    out.mkdir(parents=True, exist_ok=True)
    cache.mkdir(parents=True, exist_ok=True)
    if own_wheel is None:
        tree = source_tree or find_source_tree()
        if tree is None:
            raise UsageError("edgebundle is not running from its source tree, so it cannot build its own wheel",
                             hint="pass --edgebundle-wheel WHEEL (the wheel this edgebundle came from)")
        log(f"building the edgebundle wheel from {tree}")
        own_wheel = build_own_wheel(tree, out)
    elif own_wheel.parent.resolve() != out.resolve():
        shutil.copy2(own_wheel, out / own_wheel.name)
    for t in targets:
        hint = (f"the build host could not get wheels for {t} from its package index; check pip's "
                "index configuration, or choose other --target-platform / --python-version values")
        proc = subprocess.run([sys.executable, "-m", "pip",
                               *_download(own_wheel, t, out, index=False, find_links=cache)],
                              capture_output=True, text=True)
        if proc.returncode != 0:
            log(f"downloading wheels for {t} into {cache}")
            _pip(_download(own_wheel, t, cache, index=True, find_links=cache), f"pip download for {t}", hint)
            for stale in cache.glob("edgebundle-*.whl"):  # never resolve our own package from the cache
                stale.unlink()
            _pip(_download(own_wheel, t, out, index=False, find_links=cache), f"collecting wheels for {t}", hint)
        log(f"wheels for {t}: ready")
    return out / own_wheel.name


def wheel_version(wheel: Path) -> str:
    return wheel.name.split("-")[1]


# --- writing one file, proven from the device ---------------------------------------------

@dataclass
class FileReport:
    """One file on the media: what was written and whether it read back right."""

    name: str
    size: int
    digest: str | None
    status: str  # ok | kept (already present and verified) | FAILED
    write_seconds: float = 0.0
    verify_seconds: float = 0.0
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.status != "FAILED"

    def rates(self) -> tuple[float | None, float | None]:
        """Write and read-back rates in MB/s (10^6 bytes per second)."""
        def rate(s: float) -> float | None:
            return round(self.size / s / 1e6, 1) if s > 0 else None
        return rate(self.write_seconds), rate(self.verify_seconds)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["writeMBps"], d["verifyMBps"] = self.rates()
        return d

    def line(self) -> str:
        w, v = self.rates()
        digest = (self.digest or "-")[:19] + ("\u2026" if self.digest else "")
        speed = f"write {w or 0:7.1f} MB/s  verify {v or 0:7.1f} MB/s" if self.status == "ok" else (
            f"verify {v or 0:7.1f} MB/s (already on the media)" if self.status == "kept" else "")
        line = f"  {self.status:<7} {self.name:<44} {human(self.size):>10}  {digest:<21} {speed}"
        return line + (f"\n          {self.error}" if self.error else "")


def _drop_cache(fd: int) -> None:
    """Ask the kernel to forget the file's cached pages, so the next read comes from the device."""
    if hasattr(os, "posix_fadvise"):
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)


def read_back(path: Path, progress: Callable[[int], None] | None = None) -> tuple[str, int]:
    """sha256 and size of ``path`` as the device holds it (cache dropped before and after)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        _drop_cache(fd)
        with os.fdopen(os.dup(fd), "rb") as f:
            result = hash_stream(f, progress)
        _drop_cache(fd)  # leave nothing cached, so a later verify also reads the device
        return result
    finally:
        os.close(fd)


class _Tee:
    """Writes to ``out`` (hashing) and reports each chunk to ``progress``."""

    def __init__(self, out: HashingWriter, progress: Callable[[int], None] | None) -> None:
        self.out, self.progress = out, progress

    def write(self, data: bytes) -> int:
        self.out.write(data)
        if self.progress:
            self.progress(len(data))
        return len(data)


def write_verified(dest: Path, name: str, size: int, produce: Callable[[Any], None],
                   expected: str | None = None, progress: Callable[[int], None] | None = None) -> FileReport:
    """Write ``name`` in ``dest`` from ``produce(out)``, then prove it from the device.

    ``expected`` is the sha256 the bytes must have (a signed part, a staged wheel); without it
    the hash taken while writing is what the read-back must match.
    """
    final = dest / name
    final.parent.mkdir(parents=True, exist_ok=True)
    if expected is not None and final.is_file() and final.stat().st_size == size:
        t0 = time.monotonic()
        if read_back(final, progress) == (expected, size):
            return FileReport(name, size, expected, "kept", verify_seconds=time.monotonic() - t0)
    tmp = final.with_name(f".tmp-{final.name}")
    try:
        t0 = time.monotonic()
        with open(tmp, "wb") as f:
            w = HashingWriter(f)  # type: ignore[arg-type]
            produce(_Tee(w, progress))
            f.flush()
            os.fsync(f.fileno())
            _drop_cache(f.fileno())
        t1 = time.monotonic()
        want = expected or w.digest
        if (w.digest, w.size) != (want, size):
            tmp.unlink()
            return FileReport(name, size, want, "FAILED", t1 - t0, error=(
                f"the source gave {w.size} bytes with sha256 {w.digest}, expected {size} bytes with "
                f"{want}: the bundle being copied is damaged"))
        got = read_back(tmp, progress)
        t2 = time.monotonic()
        if got != (want, size):
            tmp.unlink()
            return FileReport(name, size, want, "FAILED", t1 - t0, t2 - t1, error=(
                f"read back from the media as {got[1]} bytes with sha256 {got[0]}, written as "
                f"{want}: the media is faulty"))
        os.replace(tmp, final)
        fsync_dir(final.parent)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise MediaError(f"writing {name} to {dest} failed: {e}",
                         hint="check the media is mounted read-write, has space, and is not failing") from None
    except BaseException:  # e.g. a damaged source part: leave no half-written file behind
        tmp.unlink(missing_ok=True)
        raise
    return FileReport(name, size, want, "ok", t1 - t0, t2 - t1)


def _copy_from(opener: Callable[[], BinaryIO], size: int) -> Callable[[Any], None]:
    def produce(out: Any) -> None:
        with opener() as f:
            for chunk in iter_chunks(f, size + 1):  # one byte over: a grown source shows as a mismatch
                out.write(chunk)
    return produce


def _copy_path(path: Path, size: int) -> Callable[[Any], None]:
    return _copy_from(lambda: open(path, "rb"), size)


def _bytes(data: bytes) -> Callable[[Any], None]:
    return lambda out: out.write(data)


# --- what goes on the media ---------------------------------------------------------------

@dataclass(frozen=True)
class Item:
    """One file to put on the media."""

    name: str  # relative to DEST, POSIX
    size: int
    produce: Callable[[Any], None]
    expected: str | None = None


@dataclass
class BundleOnMedia:
    """The bundle being written: its root, signers, and the files that carry it."""

    root: Root
    signers: list[str]
    items: list[Item]
    parts: PartIndex | None
    tar_bytes: int


def bundle_items(bundle: Path) -> BundleOnMedia:
    """Read the bundle's signed root and plan its files: parts + signed index, or one tar."""
    source: BundleSource = open_source(bundle)
    envelope = root_envelope(source)
    root, signers = parse_root(envelope.payload), envelope.signer_ids
    if isinstance(source, PartsSource):
        idx = source.index
        items = [Item(p.file, p.size, _copy_path(source.directory / p.file, p.size), p.digest)
                 for p in idx.parts]
        items += [Item(source.index_path.name, len(source.index_bytes), _bytes(source.index_bytes))]
        return BundleOnMedia(root, signers, items, idx, idx.size)
    name = bundle_file_name(Path(bundle), source, root)
    size = bundle_tar_size(source, root)
    if isinstance(source, TarSource):
        produce = _copy_from(source.open_whole, size)  # the tar as it is
    else:
        produce = lambda out: write_bundle_tar(source, root, out)  # noqa: E731 (a directory, as its tar)
    return BundleOnMedia(root, signers, [Item(name, size, produce)], None, size)


def _wheel_items(wheelhouse: Path) -> list[Item]:
    items = []
    for whl in sorted(wheelhouse.glob("*.whl")):
        digest, size = hash_file(whl)
        items.append(Item(f"{WHEELHOUSE}/{whl.name}", size,
                          _copy_path(whl, size), digest))
    return items


def _mounts() -> list[tuple[str, str]]:
    """(mount point, filesystem type) of every mount, from /proc/self/mounts."""
    try:
        text = Path("/proc/self/mounts").read_text()
    except OSError:
        return []
    out = []
    for line in text.splitlines():
        f = line.split()
        if len(f) >= 3:
            out.append((f[1].encode().decode("unicode_escape"), f[2]))
    return out


def filesystem_type(path: Path) -> str | None:
    """The filesystem ``path`` lives on (``vfat`` for a FAT32 stick), or None when unknown."""
    p = str(path.resolve())
    best: tuple[str, str | None] = ("", None)
    for mnt, fstype in _mounts():
        if (p == mnt or p.startswith(mnt.rstrip("/") + "/")) and len(mnt) >= len(best[0]):
            best = (mnt, fstype)
    return best[1]


def _preflight(dest: Path, items: list[Item], replace: bool) -> None:
    """Refuse before writing: another bundle's files, FAT32's file-size cap, too little space."""
    ours = {i.name for i in items}
    others = sorted(p.name for p in dest.iterdir()
                    if p.is_file() and _BUNDLE_FILE.fullmatch(p.name) and p.name not in ours)
    if others and not replace:
        raise UsageError(f"{dest} already holds another bundle's files: {', '.join(others[:6])}",
                         hint="pass --replace to remove them, or use an empty stick")
    if filesystem_type(dest) in ("vfat", "msdos"):
        big = [i for i in items if i.size > FAT32_MAX]
        if big:
            raise MediaError(f"{dest} is FAT32, which cannot hold {big[0].name} ({human(big[0].size)})",
                             hint="split the bundle first: bundle split BUNDLE --size fat32 --key KEY")
    present = {i.name: (dest / i.name).stat().st_size for i in items if (dest / i.name).is_file()}
    need = sum(i.size for i in items) - sum(present.values())
    st = os.statvfs(dest)
    free = st.f_bavail * st.f_frsize
    if need > free:
        raise MediaError(f"{dest} has {human(free)} free, the media needs {human(need)} more",
                         hint="use a larger stick, or --no-wheels to leave out the installer")
    for name in others:
        (dest / name).unlink()


# --- generated files ---------------------------------------------------------------------

def render_bootstrap(version: str, targets: list[Target]) -> str:
    """``bootstrap.sh``: check the wheelhouse, make a venv, install edgebundle with no index."""
    pythons = sorted({t.python for t in targets}, key=lambda v: tuple(map(int, v.split("."))))
    machines = sorted({t.machine for t in targets})
    return f'''#!/bin/sh
# edgebundle offline installer bootstrap, written by `bundle write-media`.
# Needs only python3 (3.11+, with the venv module). Installs edgebundle {version} from the
# wheelhouse beside this script with no package index, into ./{VENV_NAME} in the current
# directory (or the directory given as $1, or $EDGEBUNDLE_VENV); never onto this media.
# Exit codes: 0 ok, 1 error, 2 usage, 4 a wheel on the media is corrupt.
set -eu
MEDIA=$(CDPATH= cd -- "$(dirname -- "$0")" && pwd)
VENV=${{1:-${{EDGEBUNDLE_VENV:-$PWD/{VENV_NAME}}}}}
PY=${{PYTHON:-python3}}
VERSION={version}
if ! command -v "$PY" >/dev/null 2>&1; then
  echo "bootstrap: $PY not found; install python3 ({' or '.join(pythons)}) with venv" >&2
  exit 1
fi
case "$VENV" in
  "$MEDIA"|"$MEDIA"/*)
    echo "bootstrap: $VENV is on the media; cd to a writable directory (e.g. cd ~) or pass a path" >&2
    exit 2 ;;
esac
"$PY" - "$MEDIA" <<'PYEOF'
import hashlib, os, platform, sys
media = sys.argv[1]
pythons, machines = {pythons!r}, {machines!r}
have = "%d.%d" % sys.version_info[:2]
if have not in pythons:
    sys.exit("bootstrap: this python3 is %s; the wheelhouse holds wheels for python %s "
             "(set PYTHON=/path/to/python3.X)" % (have, " or ".join(pythons)))
if platform.machine() not in machines:
    sys.exit("bootstrap: this machine is %s; the wheelhouse is for %s" % (platform.machine(), ", ".join(machines)))
bad, n = [], 0
with open(os.path.join(media, "{SUMS}")) as sums:
    for line in sums:
        digest, _, name = line.rstrip("\\n").partition("  ")
        if not name.startswith("{WHEELHOUSE}/"):
            continue
        h = hashlib.sha256()
        try:
            with open(os.path.join(media, name), "rb") as f:
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    h.update(chunk)
        except OSError as e:
            bad.append("%s: %s" % (name, e))
            continue
        n += 1
        if h.hexdigest() != digest:
            bad.append("%s: sha256 %s, expected %s" % (name, h.hexdigest(), digest))
if bad:
    print("bootstrap: the wheelhouse on this media is damaged:", file=sys.stderr)
    for b in bad:
        print("  " + b, file=sys.stderr)
    sys.exit(4)
print("bootstrap: %d wheels checked against {SUMS}" % n)
PYEOF
echo "bootstrap: creating $VENV"
"$PY" -m venv "$VENV"
PIP_CONFIG_FILE=/dev/null PIP_NO_INDEX=1 "$VENV/bin/python" -m pip install --quiet --isolated \\
  --no-index --find-links "$MEDIA/{WHEELHOUSE}" "edgebundle==$VERSION"
echo "bootstrap: installed edgebundle $VERSION into $VENV"
echo "next: $VENV/bin/installer verify $MEDIA --site SITE.yaml"
'''


#: The site-side steps, in order: (verb, arguments after the verb, why, needed when).
_STEPS: tuple[tuple[str, str, str, Callable[[Root], bool]], ...] = (
    ("verify", '"$MEDIA" --site "$SITE"',
     "prove the bundle genuine and intact (reads every byte, names a bad part)", lambda r: True),
    ("load", '"$MEDIA" --site "$SITE"', "push the images to the site registry", lambda r: bool(r.images)),
    ("stage", '"$MEDIA" --site "$SITE"', "copy the models to the NAS", lambda r: bool(r.models)),
    ("plan", '"$MEDIA" --site "$SITE" -o plan.json', "what applying would change in the cluster",
     lambda r: r.manifests is not None),
    ("approve", 'plan.json --operator "$USER" --site "$SITE"', "look at the plan and approve it",
     lambda r: r.manifests is not None),
    ("apply", 'plan.json --site "$SITE"', "apply the approved plan, wait for health",
     lambda r: r.manifests is not None),
    ("status", '--site "$SITE"', "what the site runs now", lambda r: True),
)


def installer_commands(root: Root, installer: str = f"./{VENV_NAME}/bin/installer") -> list[tuple[str, str]]:
    """(exact command line, why) for each installer verb this bundle needs that this edgebundle has."""
    try:
        from installer.cli import main as installer_main
        verbs: set[str] | None = set(installer_main.commands)
    except Exception:  # a builder-only install: list every step
        verbs = None
    return [(f"{installer} {verb} {args}", why) for verb, args, why, needed in _STEPS
            if needed(root) and (verbs is None or verb in verbs)]


def render_runbook(bom: BundleOnMedia, files: list[FileReport], *, wheels: list[Target] | None,
                   version: str | None, site_file: str, mount_point: str) -> str:
    """``README.txt``: what is on the stick and the exact commands, readable with no tool at all."""
    from bundler.commands.inspect import describe

    d = describe(bom.root, bom.signers, bom.tar_bytes)
    out: list[str] = []
    add = out.append
    title = f"edgebundle field media: {d['name']} {d['version']}"
    add(title)
    add("=" * len(title))
    add("")
    add("This stick carries one signed bundle and (unless noted) an offline installer.")
    add("Mount it read-only on site; nothing is ever written to it there.")
    add("")
    base = bom.root.base
    if base is not None:
        from edgebundle.rebuild import full_root_digest

        add("THIS IS A DELTA")
        add(f"  It carries only what changed since {base.name} {base.version}; the rest is rebuilt")
        add("  from that base, which the site must already have installed (loaded and staged):")
        add(f"  base        {base.name} {base.version}")
        add(f"  base root   {base.root}")
        add(f"  full root   {full_root_digest(bom.root)}  (the full bundle it becomes)")
        add("  Check with: installer status --site SITE (the base must be listed as installed).")
        add("  Without the base the installer refuses this delta (WrongBaseError). Then bring either")
        add(f"  the base bundle {base.name} {base.version} first, or the full bundle {d['name']} {d['version']}")
        add("  (bundle create without --base) instead of this delta.")
        add("")
    add("BUNDLE")
    for k, v in (("name", d["name"]), ("version", d["version"]), ("compatible", d["compatible"]),
                 ("created", d["created"]), ("root", d["root"]),
                 ("bundle tar", f"{human(bom.tar_bytes)} ({bom.tar_bytes} bytes)")):
        add(f"  {k:<11} {v}")
    for kid in d["signers"] or ["NONE (unsigned)"]:
        add(f"  signed by   keyid {kid}")
    add("  Compare the keyid with the keys your site file trusts (spec.trust.keys).")
    add("")
    add("IMAGES")
    for im in d["images"] or []:
        add(f"  {im['ref']}")
        add(f"      {im['digest']}  {','.join(im['platforms'])}  {human(im['size'])}")
    if not d["images"]:
        add("  (none)")
    add("")
    add("MODELS")
    for m in d["models"]:
        params = m["paramCount"]
        extra = ", ".join(x for x in (m["format"], m["quantization"], None if not params else
                                      f"{params / 1e6:.0f}M params" if params >= 1e6 else f"{params} params") if x)
        add(f"  {m['name']} {m['version']} ({m['kind']}; {extra}; {human(m['size'])})")
        for f in m["files"]:
            add(f"      {f['path']}  {f['size']} bytes  {f['digest']}")
    if not d["models"]:
        add("  (none)")
    add("")
    add(f"MANIFESTS ({len(d['manifests'])} files)")
    for f in d["manifests"]:
        add(f"  {f['path']}  {f['digest']}")
    add("")
    add("FILES ON THIS MEDIA (sha256 of each file; SHA256SUMS lists them for sha256sum -c)")
    ranges = {p.file: (p.offset, p.last_byte) for p in bom.parts.parts} if bom.parts else {}
    for r in files:
        if r.name.startswith(WHEELHOUSE + "/"):
            continue
        where = f"  bytes {ranges[r.name][0]}\u2013{ranges[r.name][1]}" if r.name in ranges else ""
        add(f"  {r.name}  {r.size} bytes{where}")
        add(f"      {r.digest}")
    if bom.parts:
        add(f"  The parts joined in order are the signed bundle tar {bom.parts.bundle_file}; the")
        add(f"  installer reads them in place. {bom.parts.stem}{INDEX_SUFFIX} lists them, signed")
        add("  (a DSSE envelope) with the bundle's key.")
    add("")
    add("ON SITE: THE EXACT COMMANDS")
    add(f"  MEDIA={mount_point}")
    add(f"      # where this stick is mounted, e.g.: mount -o ro /dev/sdX1 {mount_point}")
    add(f"  SITE={site_file}")
    add("      # this site's site file")
    n = 1
    if wheels:
        add("  cd ~")
        add("      # the installer's venv goes here, not on the stick")
        add(f"  sh \"$MEDIA/{BOOTSTRAP}\"")
        add(f"      # {n}. offline install of edgebundle {version} into ./{VENV_NAME}")
        n += 1
    for line, why in installer_commands(bom.root, f"./{VENV_NAME}/bin/installer" if wheels else "installer"):
        add(f"  {line}")
        add(f"      # {n}. {why}")
        n += 1
    add("")
    if wheels:
        add("OFFLINE INSTALLER")
        n_wheels = sum(1 for r in files if r.name.startswith(WHEELHOUSE + "/"))
        add(f"  {WHEELHOUSE}/ holds {n_wheels} wheels: edgebundle {version} and every dependency for:")
        for t in wheels:
            add(f"    {t}")
        add("  Only python3 with the venv module is needed. bootstrap.sh checks each wheel against")
        add("  SHA256SUMS, creates the venv and installs with no package index.")
    else:
        add("OFFLINE INSTALLER: not on this media (written with --no-wheels); edgebundle must")
        add("  already be installed on the technician's machine.")
    add("")
    add("IF SOMETHING FAILS")
    add("  installer verify names a missing, short or corrupt part by file name and byte range:")
    add("  copy that part again from another good stick or the build host, or rewrite the stick")
    add("  at the depot (bundle write-media re-reads every file from the device).")
    add("  Exit codes: 0 ok, 1 error, 2 usage, 3 changes pending, 4 verification failed.")
    add("")
    return "\n".join(out)


def render_sums(files: list[FileReport]) -> str:
    return "".join(f"{r.digest.split(':', 1)[1]}  {r.name}\n" for r in files if r.digest)


# --- the whole operation -----------------------------------------------------------------

@dataclass
class MediaResult:
    dest: Path
    root: Root
    files: list[FileReport] = field(default_factory=list)
    wheel_targets: list[Target] | None = None
    edgebundle_version: str | None = None
    verified: dict[str, Any] | None = None
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return all(f.ok for f in self.files)

    def to_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "dest": str(self.dest), "name": self.root.name,
                "version": self.root.version, "root": self.root.digest,
                "files": [f.to_dict() for f in self.files],
                "bytes": sum(f.size for f in self.files),
                "wheelhouse": None if self.wheel_targets is None else {
                    "edgebundle": self.edgebundle_version,
                    "targets": [{"platform": t.platform, "python": t.python} for t in self.wheel_targets]},
                "verified": self.verified, "seconds": round(self.seconds, 2)}


def write_media(bundle: Path, dest: Path, *, targets: list[Target] | None,
                wheel_cache: Path | None = None, own_wheel: Path | None = None,
                site_file: str = "/etc/edgebundle/site.yaml", mount_point: str = "/media/usb",
                replace: bool = False, progress_enabled: bool | None = None,
                on_file: Callable[[FileReport], None] = lambda r: None,
                log: Callable[[str], None] = lambda s: None) -> MediaResult:
    """Write ``bundle`` and (``targets`` not None) the offline installer to ``dest``, proving each file.

    Returns a report; files that failed are listed with status ``FAILED`` (the caller exits 4).
    """
    t_start = time.monotonic()
    dest = Path(dest)
    if not dest.is_dir():
        raise UsageError(f"{dest} is not a directory", hint="mount the stick and give its mount point")
    bom = bundle_items(bundle)
    src_dir = Path(bundle).resolve() if Path(bundle).is_dir() else Path(bundle).resolve().parent
    if src_dir == dest.resolve():
        raise UsageError("the bundle is already in DEST", hint="give the bundle's build-host copy as BUNDLE")
    result = MediaResult(dest, bom.root, wheel_targets=targets)
    with tempfile.TemporaryDirectory(prefix="edgebundle-wheelhouse-") as tmp:
        stage = Path(tmp)
        items = list(bom.items)
        if targets is not None:
            wheelhouse = stage / WHEELHOUSE
            own = build_wheelhouse(wheelhouse, targets, cache=wheel_cache or default_wheel_cache(),
                                   own_wheel=own_wheel, log=log)
            result.edgebundle_version = wheel_version(own)
            items += _wheel_items(wheelhouse)
        _preflight(dest, items, replace)
        for item in items:
            bar = Progress(f"{item.name} (write + read back)", 2 * item.size, enabled=progress_enabled)
            report = write_verified(dest, item.name, item.size, item.produce, item.expected, bar)
            bar.done()
            result.files.append(report)
            on_file(report)
        if targets is not None:
            keep = {i.name.split("/", 1)[1] for i in items if i.name.startswith(WHEELHOUSE + "/")}
            for stale in (dest / WHEELHOUSE).glob("*"):
                if stale.is_file() and stale.name not in keep:
                    stale.unlink()
    generated: list[tuple[str, bytes]] = []
    if targets is not None:
        generated.append((BOOTSTRAP, render_bootstrap(result.edgebundle_version or "", targets).encode()))
    generated.append((README, render_runbook(bom, list(result.files), wheels=targets,
                                             version=result.edgebundle_version, site_file=site_file,
                                             mount_point=mount_point).encode()))
    for name, data in generated:
        report = write_verified(dest, name, len(data), _bytes(data))
        result.files.append(report)
        on_file(report)
    sums = render_sums(result.files).encode()
    report = write_verified(dest, SUMS, len(sums), _bytes(sums))
    result.files.append(report)
    on_file(report)
    result.seconds = time.monotonic() - t_start
    return result


def verify_media(dest: Path, trust: Any, progress_enabled: bool | None = None) -> dict[str, Any]:
    """Full verification of what is now on the media (parts, signature, every blob), from the device."""
    from edgebundle.verify import Verifier

    source = open_source(dest)
    bar = Progress("verify media", sum(source.members().values()), enabled=progress_enabled)
    vb = Verifier(trust, progress=bar).verify(source)
    bar.done()
    return {"ok": True, "root": vb.root_digest, "signers": vb.signers, "bytes": bar.done_bytes}


__all__ = ["BOOTSTRAP", "FileReport", "MediaError", "MediaResult", "MediaVerifyError", "README", "SUMS",
           "Target", "WHEELHOUSE", "build_own_wheel", "build_wheelhouse", "default_wheel_cache",
           "filesystem_type", "find_source_tree", "installer_commands", "parse_targets", "read_back", "render_bootstrap",
           "render_runbook", "verify_media", "write_media", "write_verified"]
