"""What a stick says to the person holding it: ``README.txt``, ``bootstrap.sh``, ``SHA256SUMS``.

Everything here renders text from the signed root and from what bundler/media.py wrote (and
``bundle inspect``'s document, :func:`describe`); nothing touches the media. The runbook is readable with no tool at all and names the exact commands.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any, Protocol

from bundler.wheelhouse import Target
from edgebundle.parts import INDEX_SUFFIX, PartIndex
from edgebundle.progress import human
from edgebundle.rebuild import describe_delta, full_root_digest
from edgebundle.root import Root

README = "README.txt"
BOOTSTRAP = "bootstrap.sh"
WHEELHOUSE = "wheelhouse"
SUMS = "SHA256SUMS"
VENV_NAME = "edgebundle-venv"


class OnMedia(Protocol):
    """What the runbook needs to know of the bundle on the stick (bundler.media.BundleOnMedia)."""

    root: Root
    signers: list[str]
    parts: PartIndex | None
    tar_bytes: int


def installer_extras(root: Root) -> tuple[str, ...]:
    """The optional extras the site's installer needs for this bundle: the Helm engine for charts."""
    return ("helm",) if root.charts else ()


def render_bootstrap(version: str, targets: list[Target], extras: tuple[str, ...] = ()) -> str:
    """``bootstrap.sh``: check the wheelhouse, make a venv, install edgebundle with no index."""
    package = f"edgebundle[{','.join(extras)}]" if extras else "edgebundle"
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
  --no-index --find-links "$MEDIA/{WHEELHOUSE}" "{package}==$VERSION"
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
     lambda r: r.manifests is not None or bool(r.charts)),
    ("approve", 'plan.json --operator "$USER" --site "$SITE"', "look at the plan and approve it",
     lambda r: r.manifests is not None or bool(r.charts)),
    ("apply", 'plan.json --site "$SITE"', "apply the approved plan, wait for health",
     lambda r: r.manifests is not None or bool(r.charts)),
    ("status", '--site "$SITE"', "what the site runs now", lambda r: True),
)


def installer_commands(root: Root, installer: str = f"./{VENV_NAME}/bin/installer") -> list[tuple[str, str]]:
    """(exact command line, why) for each installer verb this bundle needs that this edgebundle has."""
    return [(f"{installer} {verb} {args}", why) for verb, args, why, needed in _STEPS if needed(root)]


def render_runbook(bom: OnMedia, files: list[FileReport], *, wheels: list[Target] | None,
                   version: str | None, site_file: str, mount_point: str) -> str:
    """``README.txt``: what is on the stick and the exact commands, readable with no tool at all."""
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


def describe(root: Root, signers: list[str], bundle_bytes: int) -> dict[str, Any]:
    """The inspect document; also used by the media runbook."""
    blob_sizes = {d: p.size for d, p in root.blobs.items()}
    models = []
    for m in root.models:
        stored = sum(blob_sizes[f.blob] for f in m.files)
        models.append({"name": m.name, "kind": m.kind, "version": m.version, "format": m.format,
                       "architecture": m.architecture, "quantization": m.quantization,
                       "paramCount": m.paramCount, "contextLength": m.contextLength,
                       "size": m.size, "storedSize": stored, "manifest": m.manifest,
                       "files": [{"path": f.path, "digest": f.digest, "size": f.size,
                                  "encoding": f.encoding} for f in m.files]})
    content = sum(im.size for im in root.images) + sum(m["size"] for m in models) + (
        sum(f.size for f in root.manifests.files) if root.manifests else 0)
    stored = root.total_size()
    return {
        "name": root.name, "version": root.version, "compatible": root.compatible,
        "created": root.created, "root": root.digest, "signers": signers,
        "images": [{"ref": im.ref, "refName": im.refName, "digest": im.digest,
                    "platforms": im.platforms, "size": im.size,
                    "attached": [{"kind": a.kind, "tag": a.tag, "digest": a.digest} for a in im.attached]}
                   for im in root.images],
        "models": models,
        "manifests": [{"path": f.path, "digest": f.digest, "size": f.size}
                      for f in (root.manifests.files if root.manifests else [])],
        "base": vars(root.base) if root.base else None,
        "delta": describe_delta(root),
        "totals": {"contentBytes": content, "storedBlobBytes": stored, "bundleBytes": bundle_bytes,
                   "compressionSavedBytes": sum(m["size"] - m["storedSize"] for m in models)},
    }


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
