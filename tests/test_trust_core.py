"""The trust core, attacked through the verbs a user runs: the bugs we fear must fail a test here.

Every case is a small but real bundle (the real builder, real Ed25519 keys, a NAS directory and a
k3s manifests directory as the cluster), so this file needs no registry and runs in seconds; it is
also what ``make mutation`` runs against the trust-core modules (docs/MUTATION.md). Covered:

- a forged signature under a trusted key id, and a genuine signature over another root (bundle
  roots, split-part indexes, operator approvals) are refused;
- k-of-n with k = 2: one valid signature, the same signature twice, or a second one by an
  untrusted key are not enough;
- an approval copied under another plan (other site, other cluster, other bundle) is refused;
- staging never shows a partial model version under its final name, checked in the test's own
  thread at the installer's stage fault points, with proof that the window was observed;
- a delta whose carried patch is intact and validly signed but rebuilds bytes that differ from the
  signed full-target digest is refused when installed, and nothing reaches the NAS.

Expected values are computed independently (``hashlib``, ``cryptography``), never with the
product's own digest or key-id helpers. Tampering is done on the signed documents (DSSE envelopes)
as files: a key id string replaced, or another envelope's genuine signatures spliced over a payload;
re-signing uses the independent DSSE signer in tests/fixtures/dsse.py, not the product's.
"""

from __future__ import annotations

import atexit
import base64
import hashlib
import json
import os
import random
import shutil
import signal
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner, Result
from cryptography.hazmat.primitives import serialization

from edgebundle import faults
from tests.fixtures import dsse
from tests.fixtures.digests import sha256_file
from bundler.cli import main as bundle_main
from installer.cli import main as installer_main

pytestmark = pytest.mark.timeout(120)

EXIT_VERIFY = 4  # docs/EXIT_CODES.md
EXIT_ERROR = 1
MANIFEST = ("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: tiny-config, namespace: default}\ndata: {a: \"1\"}\n"
            "---\napiVersion: v1\nkind: PersistentVolume\nmetadata: {name: tiny-models}\n"
            "spec: {capacity: {storage: 1Gi}, accessModes: [ReadOnlyMany], nfs: {server: NFS_SERVER, path: NFS_PATH}}\n")


def bundle(*args: Any) -> Result:
    return CliRunner().invoke(bundle_main, [str(a) for a in args])


def installer(*args: Any) -> Result:
    return CliRunner().invoke(installer_main, [str(a) for a in args])


def keyid_hex(pub: Path) -> str:
    """sha256 of the raw 32-byte Ed25519 public key, computed here (not with the product's helper)."""
    key = serialization.load_pem_public_key(pub.read_bytes())
    return hashlib.sha256(key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)).hexdigest()


def tree(root: Path) -> dict[str, str]:
    """Every file below ``root`` (hidden ones included) with its sha256: what a site holds."""
    if not root.exists():
        return {}
    return {p.relative_to(root).as_posix(): sha256_file(p)[0] for p in sorted(root.rglob("*")) if p.is_file()}


def replace_in_file(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, f"{old} not in {path}"
    path.write_text(text.replace(old, new))


# --- a small world: keys, specs, bundles ---------------------------------------------------------

@dataclass
class Keys:
    key: Path
    pub: Path

    @property
    def id(self) -> str:
        return keyid_hex(self.pub)


class World:
    """Keys ``release``, ``second`` (a co-signer) and ``attacker``, and bundles built from small specs."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.keys: dict[str, Keys] = {}
        for name in ("release", "second", "attacker", "approver"):
            r = bundle("keygen", name, "--out", base / "keys")
            assert r.exit_code == 0, r.output
            self.keys[name] = Keys(base / "keys" / f"{name}.key", base / "keys" / f"{name}.pub")
        models = base / "models"
        (models / "idx").mkdir(parents=True)
        (models / "idx" / "index.bin").write_bytes(random.Random(5).randbytes(96 * 1024))
        (models / "idx" / "meta.json").write_text('{"dim": 64}\n')
        self.manifests = base / "manifests"
        self.manifests.mkdir()
        (self.manifests / "cm.yaml").write_text(MANIFEST)
        self.models = models

    def spec(self, label: str, version: str, models: list[dict[str, Any]] | None = None) -> Path:
        d = self.base / "specs" / label
        d.mkdir(parents=True)
        doc = {"apiVersion": "edgebundle/v1", "kind": "Bundle",
               "metadata": {"name": "tiny", "version": version, "compatible": "tiny/x86_64"},
               "spec": {"images": [], "manifests": [str(self.manifests)],
                        "models": models or [{"name": "idx", "kind": "index", "version": "1.0",
                                              "path": str(self.models / "idx")}]}}
        path = d / "bundle.yaml"
        path.write_text(json.dumps(doc))
        r = bundle("lock", path)
        assert r.exit_code == 0, r.output
        return path

    def build(self, spec: Path, out: str, *signers: str, extra: tuple[Any, ...] = ()) -> Path:
        """``bundle create`` signed by ``signers``; ``out`` ending in .tar gives a tar, else a directory."""
        path = self.base / "out" / out
        path.parent.mkdir(parents=True, exist_ok=True)
        keys = [a for s in signers for a in ("--key", self.keys[s].key)]
        r = bundle("create", spec, *keys, "-o", path, *extra)
        assert r.exit_code == 0, r.output
        return path

    def site(self, d: Path, *, trust: tuple[str, ...] = ("release",), threshold: int = 1, name: str = "plant-1",
             approvers: tuple[str, ...] = (), k3s: Path | None = None, state: Path | None = None,
             nas: Path | None = None) -> Path:
        d.mkdir(parents=True, exist_ok=True)
        nas = nas or d / "nas"
        nas.mkdir(parents=True, exist_ok=True)
        spec: dict[str, Any] = {
            "compatible": "tiny/x86_64",
            "trust": {"keys": [str(self.keys[t].pub) for t in trust], "threshold": threshold},
            "registry": {"address": "127.0.0.1:9", "plainHTTP": True},  # no images: never contacted
            "models": {"root": str(nas), "nfs": {"server": "10.0.0.5", "path": "/export/models"}},
            "stateDir": str(state or d / "state"),
            "cluster": {"manifestsDir": str(k3s or d / "k3s")},
        }
        if approvers:
            spec["approval"] = {"keys": [str(self.keys[a].pub) for a in approvers]}
        (k3s or d / "k3s").mkdir(parents=True, exist_ok=True)
        path = d / "site.yaml"
        path.write_text(yaml.safe_dump({"apiVersion": "edgebundle/v1", "kind": "Site",
                                        "metadata": {"name": name}, "spec": spec}))
        return path


@dataclass(frozen=True)
class Bundles:
    world: World
    v100: Path  # tiny 1.0.0 signed by release (directory)
    v101: Path  # tiny 1.0.1 signed by release (directory)
    v100_both: Path  # tiny 1.0.0 signed by release and second (directory)
    v100_attacker: Path  # tiny 1.0.0 signed by attacker (directory)


_BUILT: dict[str, Any] = {}


def _build_bundles() -> Bundles:
    """Built once per process, outside pytest's temp dirs: ``make mutation`` forks one test run per
    mutant from a process that already has them (docs/MUTATION.md), so each run starts in ms.
    Tests only ever read these bundles; they tamper with private copies."""
    if "bundles" not in _BUILT:
        base = Path(tempfile.mkdtemp(prefix="edgebundle-trust-core-"))
        owner = os.getpid()
        atexit.register(lambda: os.getpid() == owner and shutil.rmtree(base, ignore_errors=True))
        w = World(base)
        s100, s101 = w.spec("v100", "1.0.0"), w.spec("v101", "1.0.1")
        _BUILT["bundles"] = Bundles(w, w.build(s100, "v100", "release"), w.build(s101, "v101", "release"),
                                    w.build(s100, "v100-both", "release", "second"),
                                    w.build(s100, "v100-attacker", "attacker"))
    return _BUILT["bundles"]


@pytest.fixture
def bundles() -> Bundles:
    return _build_bundles()


def private_copy(src: Path, tmp_path: Path, name: str = "copy") -> Path:
    dst = tmp_path / name
    shutil.copytree(src, dst) if src.is_dir() else shutil.copyfile(src, dst)
    return dst


ROOT = "edgebundle/root.dsse.json"  # the signed root: a DSSE envelope (docs/SECURITY.md)


def splice_signatures(dst: Path, src: Path) -> None:
    """``dst``'s envelope keeps its payload but carries ``src``'s (genuine) signatures."""
    env = json.loads(dst.read_text())
    env["signatures"] = json.loads(src.read_text())["signatures"]
    dst.write_text(json.dumps(env))


def envelope_payload(path: Path) -> dict[str, Any]:
    """The JSON document of a DSSE envelope (a delta root's decompressed), decoded here (not with the
    product's parser)."""
    return json.loads(dsse.document(json.loads(path.read_text())))  # type: ignore[no-any-return]


# --- bundle roots: forged signatures and k-of-n ---------------------------------------------------

def test_a_bundle_signed_by_the_trusted_key_is_accepted(bundles: Bundles, tmp_path: Path) -> None:
    """The control for every refusal below: the untouched bundle passes both verifiers."""
    w = bundles.world
    r = bundle("verify", bundles.v100, "--pubkey", w.keys["release"].pub, "--json")
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert doc["signers"] == [w.keys["release"].id]
    # every pinned member was read and hashed: the bytes checked are all but the root envelope
    pinned = sum(p.stat().st_size for p in bundles.v100.rglob("*")
                 if p.is_file() and p.relative_to(bundles.v100).as_posix() != "edgebundle/root.dsse.json")
    assert doc["bytes"] == pinned
    r = installer("verify", bundles.v100, "--site", w.site(tmp_path / "s"), "--json")
    assert r.exit_code == 0, r.output


def test_a_forged_signature_under_the_trusted_key_id_is_refused(bundles: Bundles, tmp_path: Path) -> None:
    """Signed by the attacker, relabelled with the trusted key's id: the signature must be checked."""
    w = bundles.world
    forged = private_copy(bundles.v100_attacker, tmp_path)
    replace_in_file(forged / ROOT, w.keys["attacker"].id, w.keys["release"].id)
    r = bundle("verify", forged, "--pubkey", w.keys["release"].pub)
    assert r.exit_code == EXIT_VERIFY, r.output
    assert "does not match" in r.stderr and w.keys["release"].id[:16] in r.stderr
    site = w.site(tmp_path / "s")
    r = installer("verify", forged, "--site", site)
    assert r.exit_code == EXIT_VERIFY and "does not match" in r.stderr, r.output
    r = installer("stage", forged, "--site", site)
    assert r.exit_code == EXIT_VERIFY, r.output
    assert tree(tmp_path / "s" / "nas") == {}


def test_a_genuine_signature_over_another_root_is_refused(bundles: Bundles, tmp_path: Path) -> None:
    """The trusted key really signed 1.0.1; its signature spliced over 1.0.0's root proves nothing."""
    w = bundles.world
    swapped = private_copy(bundles.v100, tmp_path)
    splice_signatures(swapped / ROOT, bundles.v101 / ROOT)
    r = bundle("verify", swapped, "--pubkey", w.keys["release"].pub)
    assert r.exit_code == EXIT_VERIFY and "does not match" in r.stderr, r.output
    r = installer("verify", swapped, "--site", w.site(tmp_path / "s"))
    assert r.exit_code == EXIT_VERIFY, r.output


def test_an_unsigned_or_untrusted_bundle_is_refused(bundles: Bundles, tmp_path: Path) -> None:
    w = bundles.world
    r = bundle("verify", bundles.v100_attacker, "--pubkey", w.keys["release"].pub)
    assert r.exit_code == EXIT_VERIFY and "0 valid signature(s) by trusted keys, 1 required" in r.stderr, r.output
    unsigned = private_copy(bundles.v100, tmp_path)  # the envelope with its signature list emptied
    env = json.loads((unsigned / ROOT).read_text())
    env["signatures"] = []
    (unsigned / ROOT).write_text(json.dumps(env))
    r = bundle("verify", unsigned, "--pubkey", w.keys["release"].pub)
    assert r.exit_code == EXIT_VERIFY and "not signed" in r.stderr, r.output
    r = installer("verify", unsigned, "--site", w.site(tmp_path / "s"))
    assert r.exit_code == EXIT_VERIFY and "not signed" in r.stderr, r.output


def duplicate_signature_entries(path: Path) -> None:
    """Append a copy of every signature entry (any list of objects carrying a ``keyid``)."""
    def walk(node: Any) -> bool:
        if isinstance(node, list) and node and all(isinstance(e, dict) and "keyid" in e for e in node):
            node.extend([dict(e) for e in node])
            return True
        children = node.values() if isinstance(node, dict) else node if isinstance(node, list) else []
        return any(walk(c) for c in children)

    doc = json.loads(path.read_text())
    assert walk(doc), f"no signature list in {path}"
    path.write_text(json.dumps(doc))


def test_two_of_two_needs_two_distinct_trusted_signers(bundles: Bundles, tmp_path: Path) -> None:
    w = bundles.world
    pubs = ("--pubkey", w.keys["release"].pub, "--pubkey", w.keys["second"].pub, "--threshold", "2")
    site = w.site(tmp_path / "s", trust=("release", "second"), threshold=2)

    r = bundle("verify", bundles.v100, *pubs)
    assert r.exit_code == EXIT_VERIFY and "1 valid signature(s) by trusted keys, 2 required" in r.stderr, r.output
    assert installer("verify", bundles.v100, "--site", site).exit_code == EXIT_VERIFY

    twice = private_copy(bundles.v100, tmp_path, "twice")  # the one valid signature, listed twice
    duplicate_signature_entries(twice / ROOT)
    r = bundle("verify", twice, *pubs)
    assert r.exit_code == EXIT_VERIFY and "2 required" in r.stderr, r.output

    # release's genuine signature plus the attacker's relabelled as second's: still one valid
    mixed = private_copy(bundles.v100_both, tmp_path, "mixed")
    other = json.loads((bundles.v100_attacker / ROOT).read_text())
    doc = json.loads((mixed / ROOT).read_text())
    assert len(doc["signatures"]) == 2 and len(other["signatures"]) == 1
    doc["signatures"] = [s for s in doc["signatures"] if s["keyid"] != w.keys["second"].id] + \
        [{**other["signatures"][0], "keyid": w.keys["second"].id}]
    (mixed / ROOT).write_text(json.dumps(doc))
    r = bundle("verify", mixed, *pubs)
    assert r.exit_code == EXIT_VERIFY and "does not match" in r.stderr, r.output

    r = bundle("verify", bundles.v100_both, *pubs, "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["signers"] == sorted([w.keys["release"].id, w.keys["second"].id])
    r = installer("verify", bundles.v100_both, "--site", site)
    assert r.exit_code == 0, r.output


def test_a_threshold_above_the_number_of_keys_is_a_usage_error(bundles: Bundles) -> None:
    w = bundles.world
    r = bundle("verify", bundles.v100, "--pubkey", w.keys["release"].pub, "--threshold", "2")
    assert r.exit_code == 2 and "between 1 and 1" in r.stderr, r.output
    r = bundle("verify", bundles.v100, "--pubkey", w.keys["release"].pub, "--threshold", "0")
    assert r.exit_code == 2, r.output


# --- split parts: the signed part index -------------------------------------------------------------

def split(bundles: Bundles, src: Path, out: Path, *signers: str) -> Path:
    keys = [a for s in signers for a in ("--key", bundles.world.keys[s].key)]
    r = bundle("split", src, "--size", "64K", *keys, "-o", out)
    assert r.exit_code == 0, r.output
    return out


def index_signature(parts: Path) -> Path:
    """The signed part index (a DSSE envelope: the index and its signatures in one file)."""
    [sig] = parts.glob("*.parts.json")
    return sig


def test_part_index_signature_forged_under_the_trusted_key_id_is_refused(bundles: Bundles, tmp_path: Path) -> None:
    w = bundles.world
    site = w.site(tmp_path / "s")
    good = split(bundles, bundles.v100, tmp_path / "good", "release")
    r = installer("verify", good, "--site", site)
    assert r.exit_code == 0, r.output

    forged = split(bundles, bundles.v100_attacker, tmp_path / "forged", "attacker")  # split signs as the root
    replace_in_file(index_signature(forged), w.keys["attacker"].id, w.keys["release"].id)
    r = installer("verify", forged, "--site", site)
    assert r.exit_code == EXIT_VERIFY, r.output
    assert "part index" in r.stderr and "does not match" in r.stderr

    # The genuine index signature of another bundle's parts proves nothing about these parts.
    other = split(bundles, bundles.v101, tmp_path / "other", "release")
    splice_signatures(index_signature(forged), index_signature(other))
    r = installer("verify", forged, "--site", site)
    assert r.exit_code == EXIT_VERIFY and "part index" in r.stderr, r.output


def test_part_index_two_of_two(bundles: Bundles, tmp_path: Path) -> None:
    """Root signed by both keys, index by one: the index alone must fail a 2-of-2 site."""
    w = bundles.world
    site = w.site(tmp_path / "s", trust=("release", "second"), threshold=2)
    one = split(bundles, bundles.v100_both, tmp_path / "one", "release")
    r = installer("verify", one, "--site", site)
    assert r.exit_code == EXIT_VERIFY, r.output
    assert "part index" in r.stderr and "2 required" in r.stderr
    both = split(bundles, bundles.v100_both, tmp_path / "both", "release", "second")
    r = installer("verify", both, "--site", site)
    assert r.exit_code == 0, r.output


def test_a_part_swapped_in_from_another_bundle_is_refused(bundles: Bundles, tmp_path: Path) -> None:
    """Each part is checked against the signed index: a same-sized part of 1.0.1 under 1.0.0's is named."""
    w = bundles.world
    mine = split(bundles, bundles.v100, tmp_path / "mine", "release")
    other = split(bundles, bundles.v101, tmp_path / "other", "release")

    def parts(d: Path) -> list[Path]:
        return sorted(p for p in d.iterdir() if ".part" in p.name and not p.name.endswith(".json"))

    first, theirs = parts(mine)[0], parts(other)[0]
    assert first.stat().st_size == theirs.stat().st_size and sha256_file(first) != sha256_file(theirs)
    shutil.copyfile(theirs, first)
    first = first.name
    r = installer("verify", mine, "--site", w.site(tmp_path / "s"))
    assert r.exit_code == EXIT_VERIFY, r.output
    assert first in r.stderr or "parts of different bundles are mixed" in r.stderr, r.stderr


def test_a_corrupt_part_is_named_with_its_byte_range(bundles: Bundles, tmp_path: Path) -> None:
    """Damage inside a part is reported as that part (file and bytes), before any member is trusted."""
    w = bundles.world
    parts = split(bundles, bundles.v100, tmp_path / "parts", "release")
    r = bundle("verify", parts, "--pubkey", w.keys["release"].pub, "--json")
    assert r.exit_code == 0, r.output
    files = sorted(p for p in parts.iterdir() if ".part" in p.name and not p.name.endswith(".json"))
    total = sum(p.stat().st_size for p in files)
    pinned = sum(p.stat().st_size for p in bundles.v100.rglob("*")
                 if p.is_file() and p.relative_to(bundles.v100).as_posix() != "edgebundle/root.dsse.json")
    assert json.loads(r.stdout)["bytes"] == total + pinned  # every part hashed, then every member
    victim = files[-2]
    data = bytearray(victim.read_bytes())
    data[len(data) // 2] ^= 1
    victim.write_bytes(bytes(data))
    offset = sum(p.stat().st_size for p in files[:-2])
    for r in (bundle("verify", parts, "--pubkey", w.keys["release"].pub),
              installer("verify", parts, "--site", w.site(tmp_path / "s"))):
        assert r.exit_code == EXIT_VERIFY, r.output
        assert victim.name in r.stderr and "corrupt" in r.stderr and str(offset) in r.stderr.replace(",", ""), r.stderr


# --- approvals --------------------------------------------------------------------------------------

def approvals(site_dir: Path) -> dict[Path, bytes]:
    d = site_dir / "state" / "approvals"
    return {p: p.read_bytes() for p in d.iterdir()} if d.is_dir() else {}


def install_and_plan(site: Path, b: Path, plan: Path) -> None:
    for verb in ("load", "stage"):
        r = installer(verb, b, "--site", site)
        assert r.exit_code == 0, r.output
    r = installer("plan", b, "--site", site, "-o", plan)
    assert r.exit_code == 3, r.output


def approve(site_dir: Path, plan: Path, key: Path | None) -> Path:
    """``installer approve``; returns the approval file it wrote (whatever its name and format)."""
    before = approvals(site_dir)
    r = installer("approve", plan, "--operator", "ops", "--yes", *(["--key", key] if key else []))
    assert r.exit_code == 0, r.output
    [new] = [p for p, data in approvals(site_dir).items() if before.get(p) != data]
    return new


def test_an_approval_with_a_forged_signature_under_the_approver_key_id_is_refused(
        bundles: Bundles, tmp_path: Path) -> None:
    w = bundles.world
    d = tmp_path / "s"
    site = w.site(d, approvers=("approver",))
    plan = tmp_path / "plan.json"
    install_and_plan(site, bundles.v100, plan)
    forged = approve(d, plan, w.keys["attacker"].key)
    replace_in_file(forged, w.keys["attacker"].id, w.keys["approver"].id)
    r = installer("apply", plan, "--site", site)
    assert r.exit_code == EXIT_ERROR, r.output
    assert "signature" in r.output and "does not match" in r.output
    assert tree(d / "k3s") == {}

    genuine = approve(d, plan, w.keys["approver"].key)
    assert genuine == forged  # one approval per plan: the genuine one replaced the forgery
    signed = genuine.read_text()
    env = json.loads(signed)
    doc = json.loads(base64.b64decode(env["payload"]))
    # edited after signing (valid a year longer): the signature must cover every field
    longer = {**doc, "expiresAt": doc["expiresAt"].replace("20", "21", 1)}
    genuine.write_text(json.dumps({**env, "payload": base64.b64encode(json.dumps(longer).encode()).decode()}))
    r = installer("apply", plan, "--site", site)
    assert r.exit_code == EXIT_ERROR and "altered after signing" in r.output, r.output
    # the signature with a stray character: not base64, so not a signature (never "cleaned up")
    sig = env["signatures"][0]["sig"]
    genuine.write_text(json.dumps({**env, "signatures": [{**env["signatures"][0], "sig": sig[:8] + "*" + sig[8:]}]}))
    r = installer("apply", plan, "--site", site)
    assert r.exit_code == EXIT_ERROR and "approv" in r.output, r.output
    assert tree(d / "k3s") == {}
    genuine.write_text(signed)
    r = installer("apply", plan, "--site", site)
    assert r.exit_code == 0, r.output
    assert list(tree(d / "k3s")) == ["edgebundle-plant-1.yaml"]


@pytest.mark.parametrize("differs", ["site", "cluster", "bundle"])
def test_an_approval_copied_under_another_plan_is_refused(differs: str, bundles: Bundles, tmp_path: Path) -> None:
    """A valid, signed approval for plan A, copied to where plan B's approval lives, must not approve B.

    B differs from A only in the named respect: another site (name and state dir), another cluster
    (another k3s directory) or another bundle (1.0.1 instead of 1.0.0, same site and cluster).
    """
    w = bundles.world
    da, db = tmp_path / "a", tmp_path / "b"
    site_a = w.site(da, approvers=("approver",))
    plan_a, plan_b = tmp_path / "a.json", tmp_path / "b.json"
    install_and_plan(site_a, bundles.v100, plan_a)
    b_bundle = bundles.v101 if differs == "bundle" else bundles.v100
    if differs == "site":
        site_b = w.site(db, approvers=("approver",), name="plant-2", k3s=da / "k3s")
        install_and_plan(site_b, b_bundle, plan_b)
    elif differs == "cluster":
        db = da
        site_b = w.site(tmp_path / "b-site", approvers=("approver",), k3s=tmp_path / "other-k3s",
                        state=da / "state", nas=da / "nas")
        r = installer("plan", b_bundle, "--site", site_b, "-o", plan_b)
        assert r.exit_code == 3, r.output
    else:
        db, site_b = da, site_a
        install_and_plan(site_b, b_bundle, plan_b)
    assert json.loads(plan_a.read_text())["planHash"] != json.loads(plan_b.read_text())["planHash"]

    approval_a = approve(da, plan_a, w.keys["approver"].key)
    approval_b = approve(db, plan_b, w.keys["approver"].key)
    genuine_b = approval_b.read_bytes()
    written = tree(tmp_path / "other-k3s") if differs == "cluster" else tree(db / "k3s")

    shutil.copyfile(approval_a, approval_b)
    r = installer("apply", plan_b, "--site", site_b)
    assert r.exit_code == EXIT_ERROR, r.output
    assert "approv" in r.output
    after = tree(tmp_path / "other-k3s") if differs == "cluster" else tree(db / "k3s")
    assert after == written, "nothing may be applied under a copied approval"

    approval_b.write_bytes(genuine_b)  # the control: B's own approval does apply B
    r = installer("apply", plan_b, "--site", site_b)
    assert r.exit_code == 0, r.output


def test_an_unsigned_approval_is_refused_where_approver_keys_are_set(bundles: Bundles, tmp_path: Path) -> None:
    w = bundles.world
    d = tmp_path / "s"
    site = w.site(d, approvers=("approver",))
    plan = tmp_path / "plan.json"
    install_and_plan(site, bundles.v100, plan)
    approve(d, plan, None)
    r = installer("apply", plan, "--site", site)
    assert r.exit_code == EXIT_ERROR and "not signed" in r.output, r.output
    assert tree(d / "k3s") == {}


# --- staging: no partial version is ever visible ---------------------------------------------------

def visible_versions(nas: Path) -> dict[str, set[str]]:
    """Model version dirs under their final names: ``kind/name/version`` -> the files in it."""
    out = {}
    for vdir in sorted(nas.glob("*/*/*")):
        if vdir.is_dir() and not any(part.startswith(".") for part in vdir.relative_to(nas).parts):
            out[vdir.relative_to(nas).as_posix()] = {p.relative_to(vdir).as_posix()
                                                     for p in vdir.rglob("*") if p.is_file()}
    return out


def hidden_files(nas: Path) -> set[str]:
    """Files that exist on the NAS but under a hidden (in-progress) path."""
    return {p.relative_to(nas).as_posix() for p in nas.rglob("*")
            if p.is_file() and any(part.startswith(".") for part in p.relative_to(nas).parent.parts)}


@pytest.fixture
def two_models(bundles: Bundles) -> tuple[Path, dict[str, set[str]]]:
    if "two_models" not in _BUILT:
        _BUILT["two_models"] = _two_models(bundles)
    return _BUILT["two_models"]  # type: ignore[return-value]


def _two_models(bundles: Bundles) -> tuple[Path, dict[str, set[str]]]:
    """tiny 2.0.0 with two models of two files each (so one model can be half-written)."""
    w = bundles.world
    second = w.base / "models" / "vec"
    second.mkdir(parents=True)
    (second / "vectors.bin").write_bytes(random.Random(9).randbytes(80 * 1024))
    (second / "config.json").write_text('{"dim": 64}\n')
    spec = w.spec("two-models", "2.0.0", models=[
        {"name": "idx", "kind": "index", "version": "1.0", "path": str(w.models / "idx")},
        {"name": "vec", "kind": "index", "version": "2.0", "path": str(second)}])
    marker = ".edgebundle.json"  # the staged-version marker (docs/SITE.md)
    expected = {"indices/idx/1.0": {"index.bin", "meta.json", marker},
                "indices/vec/2.0": {"vectors.bin", "config.json", marker}}
    return w.build(spec, "two-models.tar", "release"), expected


STAGE_POINTS = ["stage.file.chunk@1", "stage.file.written@1", "stage.file.renamed@1", "stage.file.renamed@3",
                "stage.marker.written@1", "stage.marker.written@2", "stage.version.renamed@1",
                "stage.version.journaled@1", "stage.version.renamed@2"]
COMMIT_ORDER = ["indices/idx/1.0", "indices/vec/2.0"]  # the order of the models in the bundle


@pytest.mark.parametrize("point", STAGE_POINTS)
def test_staging_never_shows_a_partial_version(point: str, bundles: Bundles, two_models: tuple[Path, dict[str, set[str]]],
                                                tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Pause staging at a fault point and look at the NAS from this (the test's) thread.

    The installer's ``stop`` fault mode sends SIGSTOP to itself; here that signal is intercepted
    so the look happens synchronously, while the stage is frozen mid-way. The look must find the
    staging window open (files already written, somewhere hidden) and every visible version whole.
    A bundle's versions are committed together (installer/destinations/nas.py): before the commit
    nothing is visible; during it, the versions renamed so far are whole and the rest wait, whole,
    in their hidden dirs.
    """
    b, expected = two_models
    site = bundles.world.site(tmp_path / "s")
    nas = tmp_path / "s" / "nas"
    looks: list[tuple[dict[str, set[str]], set[str]]] = []
    real_kill = os.kill

    def kill(pid: int, sig: int) -> None:
        if pid == os.getpid() and sig == signal.SIGSTOP:
            looks.append((visible_versions(nas), hidden_files(nas)))
            return
        real_kill(pid, sig)

    monkeypatch.setenv(faults.ENV, f"{point}:stop")
    monkeypatch.setattr(faults, "_hits", {})
    monkeypatch.setattr(os, "kill", kill)
    r = installer("stage", b, "--site", site)
    monkeypatch.undo()
    assert r.exit_code == 0, r.output
    assert len(looks) == 1, f"{point} was reached {len(looks)} times: the window was not observed"
    visible, hidden = looks[0]
    for version, files in visible.items():
        assert files >= expected[version], f"{version} is visible while incomplete at {point}: {sorted(files)}"
    name, _, nth = point.partition("@")
    if name.startswith("stage.version."):  # in the commit: the first nth models have appeared, whole
        committed = COMMIT_ORDER[:int(nth)]
        assert visible == {v: expected[v] for v in committed}, (point, visible)
        waiting = {v: {h.split("/", 3)[3] for h in hidden if h.startswith(v.rsplit("/", 1)[0] + "/.")}
                   for v in COMMIT_ORDER[int(nth):]}
        assert waiting == {v: expected[v] for v in waiting}, f"{point}: the rest must wait whole: {hidden}"
        assert len(hidden) == sum(map(len, waiting.values())), f"{point}: stray hidden files: {hidden}"
    else:  # before the commit: nothing of the bundle is visible, but its bytes are on the NAS (hidden)
        assert visible == {}, (point, visible)
        assert hidden, f"nothing was being staged at {point}: the window was not observed"
    assert visible_versions(nas) == expected and hidden_files(nas) == set(), "after the stage: all whole, nothing hidden"
    # The staged bytes are the inputs' bytes (hashed here, not with the product's functions).
    w = bundles.world
    assert sha256_file(nas / "indices/idx/1.0/index.bin") == sha256_file(w.models / "idx" / "index.bin")
    assert sha256_file(nas / "indices/vec/2.0/vectors.bin") == sha256_file(w.base / "models" / "vec" / "vectors.bin")


# --- a signed layer is not trusted to be safe: it must decode to the signed file ---------------------

def _tokenizers(w: World) -> dict[str, Path]:
    """A compressible tokenizer (stored ``tar+zstd``) and two same-length edits of it."""
    if "tokenizers" not in _BUILT:
        vocab = {f"token{i}": i for i in range(20000)}
        text = json.dumps({"model": {"vocab": vocab}})
        toks = {}
        for label, new in (("base", None), ("good", "token-edited"), ("evil", "token-evil!!")):
            d = w.base / "tok" / label
            d.mkdir(parents=True)
            (d / "tokenizer.json").write_text(text.replace('"token19999"', f'"{new}"') if new else text)
            toks[label] = d
        _BUILT["tokenizers"] = toks
    return _BUILT["tokenizers"]  # type: ignore[no-any-return]


def _tok_spec(w: World, label: str, version: str) -> Path:
    return w.spec(f"tok-{label}-{version}", version, models=[
        {"name": "tok", "kind": "embedding", "version": "1.1" if label == "base" else "1.2",
         "path": str(_tokenizers(w)[label])}])


@pytest.fixture
def bad_layer(bundles: Bundles) -> Path:
    """tiny 3.0.0 whose tokenizer layer is re-packed from other bytes of the same length, re-signed.

    Every blob then matches its signed pin, the signature is valid, but the layer decodes to a file
    whose digest is not the signed file digest.
    """
    if "bad_layer" not in _BUILT:
        from edgebundle.compress import write_tar_zstd

        w = bundles.world
        good = w.build(_tok_spec(w, "good", "3.0.0"), "tok-layer", "release")  # same length as "evil"
        bad = w.base / "out" / "tok-bad-layer"
        shutil.copytree(good, bad)
        root = envelope_payload(bad / ROOT)
        [f] = root["models"][0]["files"]
        assert f["encoding"] == "tar+zstd"
        layer = bad / "layer.tmp"
        with open(layer, "wb") as out:
            write_tar_zstd(_tokenizers(w)["evil"] / "tokenizer.json", "tokenizer.json", out, 0)
        digest = sha256_file(layer)[0]
        layer.rename(bad / "blobs/sha256" / digest.split(":")[1])
        (bad / "blobs/sha256" / f["blob"].split(":")[1]).unlink()
        pin = root["blobs"].pop(f["blob"])
        root["blobs"][digest] = {**pin, "digest": digest, "size": (bad / "blobs/sha256" / digest.split(":")[1]).stat().st_size}
        f["blob"] = digest
        resign(bad, root, w.keys["release"].key)
        _BUILT["bad_layer"] = bad
    return _BUILT["bad_layer"]  # type: ignore[no-any-return]


def test_a_signed_layer_that_decodes_to_other_bytes_is_refused(bundles: Bundles, bad_layer: Path, tmp_path: Path) -> None:
    w = bundles.world
    r = bundle("verify", bad_layer, "--pubkey", w.keys["release"].pub)
    assert r.exit_code == EXIT_VERIFY, r.output
    assert "tokenizer.json" in r.stderr and "decoded" in r.stderr, r.stderr
    site = w.site(tmp_path / "s")
    r = installer("stage", bad_layer, "--site", site)  # stage decodes the layer as it writes it
    assert r.exit_code == EXIT_VERIFY, r.output
    assert "tokenizer.json" in r.stderr and "does not match the signed" in r.stderr, r.stderr
    assert tree(tmp_path / "s" / "nas") == {}


# --- deltas: a rebuilt blob must match the signed full-target digest -------------------------------

@dataclass(frozen=True)
class DeltaCase:
    base: Path
    delta: Path  # intact, signed by release
    doctored: Path  # its patch replaced by a valid patch that rebuilds other bytes, re-signed by release


def canonical(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def unpack_delta(bundle_dir: Path, root: dict[str, Any]) -> None:
    """Turn a delta directory (and its ``root``, in place) into the form without a pack: every
    packed document carried whole as its own member (a form every reader still accepts). The
    pack is decoded here with zstandard and sliced by the offsets the root names."""
    delta = root["delta"]
    packs = [d for d, c in delta["carried"].items() if c["kind"] == "pack"]
    blobs = bundle_dir / "blobs" / "sha256"
    decoded = {p: dsse.delta_pack((blobs / p.split(":")[1]).read_bytes(), root) for p in packs}
    for digest, e in delta["rebuild"].items():
        if e["method"] == "packed":
            (blobs / digest.split(":")[1]).write_bytes(decoded[e["pack"]][e["offset"]:e["offset"] + e["size"]])
            delta["rebuild"][digest] = {"what": e.get("what"), "method": "whole", "size": e["size"]}
            delta["carried"][digest] = {"size": e["size"], "kind": "blob"}
    for name, e in delta.pop("files", {}).items():
        (bundle_dir / name).write_bytes(decoded[e["pack"]][e["offset"]:e["offset"] + root["files"][name]["size"]])
    for p in packs:
        del delta["carried"][p]
        (blobs / p.split(":")[1]).unlink()


def resign(bundle_dir: Path, root: dict[str, Any], key: Path) -> None:
    """Replace the bundle's root by ``root``, genuinely signed by ``key`` (the independent DSSE signer)."""
    signer = dsse.load_key(key)
    envelope = bundle_dir / ROOT
    envelope.write_bytes(dsse.forge(envelope.read_bytes(), signer, signer.public_key(), canonical(root)))


@pytest.fixture
def delta_case(bundles: Bundles) -> DeltaCase:
    if "delta_case" not in _BUILT:
        _BUILT["delta_case"] = _delta_case(bundles)
    return _BUILT["delta_case"]  # type: ignore[return-value]


def _delta_case(bundles: Bundles) -> DeltaCase:
    """Base 1.1.0 with a tokenizer; target 1.2.0 edits one token (a zstd-patch-from patch).

    The doctored delta keeps the target's signed root (its full-target digests), but carries the
    patch of another edit of the same length: intact (its own digest pinned), validly re-signed,
    and it rebuilds a tokenizer of the right size with the wrong bytes.
    """
    w = bundles.world

    def spec(label: str, version: str) -> Path:
        return _tok_spec(w, label, version)

    base = w.build(spec("base", "1.1.0"), "tok-base.tar", "release")
    good = w.build(spec("good", "1.2.0"), "tok-delta", "release", extra=("--base", base))
    evil = w.build(spec("evil", "1.2.0"), "tok-evil-delta", "release", extra=("--base", base))

    doctored = w.base / "out" / "tok-doctored"
    shutil.copytree(good, doctored)
    root = envelope_payload(doctored / ROOT)
    evil_root = envelope_payload(evil / ROOT)

    def patch_of(r: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        [(target, entry)] = [(t, e) for t, e in r["delta"]["rebuild"].items() if e.get("patch")]
        return target, entry

    target, entry = patch_of(root)
    _, evil_entry = patch_of(evil_root)
    old, new = entry["patch"], evil_entry["patch"]
    assert old != new
    (doctored / "blobs/sha256" / old.split(":")[1]).unlink()
    shutil.copyfile(evil / "blobs/sha256" / new.split(":")[1], doctored / "blobs/sha256" / new.split(":")[1])
    carried = root["delta"]["carried"]
    carried[new] = {**carried.pop(old), "size": evil_root["delta"]["carried"][new]["size"]}
    entry["patch"] = new
    if "carriedBytes" in entry:
        entry["carriedBytes"] = evil_entry["carriedBytes"]
    resign(doctored, root, w.keys["release"].key)
    r = bundle("verify", doctored, "--pubkey", w.keys["release"].pub)
    assert r.exit_code == 0, "the doctored delta must pass as signed and intact: " + r.output
    return DeltaCase(base, good, doctored)


def test_a_delta_for_another_base_is_refused(bundles: Bundles, delta_case: DeltaCase, tmp_path: Path) -> None:
    """A site that runs another 1.x of the bundle than the delta's base: refused before anything changes."""
    w = bundles.world
    site = w.site(tmp_path / "s")
    if "other_base" not in _BUILT:
        _BUILT["other_base"] = w.build(_tok_spec(w, "evil", "1.1.5"), "tok-other-base", "release")
    other = _BUILT["other_base"]
    assert installer("stage", other, "--site", site).exit_code == 0
    before = tree(tmp_path / "s" / "nas")
    r = installer("verify", delta_case.delta, "--site", site)
    assert r.exit_code == EXIT_VERIFY and "applies to base" in r.stderr, r.output
    assert installer("stage", delta_case.delta, "--site", site).exit_code == EXIT_VERIFY
    assert tree(tmp_path / "s" / "nas") == before


def test_a_delta_whose_base_input_changed_at_the_site_is_refused(bundles: Bundles, delta_case: DeltaCase,
                                                                 tmp_path: Path) -> None:
    """The delta rebuilds from the base's tokenizer on the NAS: changed or gone, nothing is staged."""
    w = bundles.world
    site = w.site(tmp_path / "s")
    for verb in ("load", "stage"):  # installed: both steps done
        assert installer(verb, delta_case.base, "--site", site).exit_code == 0
    nas = tmp_path / "s" / "nas"
    tok = nas / "embeddings/tok/1.1/tokenizer.json"
    original = tok.read_bytes()
    for damage in (b"x" + original[1:], original[:-1], None):
        if damage is None:
            tok.unlink()
        else:
            tok.write_bytes(damage)
        before = tree(nas)
        r = installer("stage", delta_case.delta, "--site", site)
        assert r.exit_code == EXIT_VERIFY, r.output
        assert "lacks 1 of its inputs" in r.stderr and str(tok) in r.stderr and "tiny 1.1.0" in r.stderr, r.stderr
        assert tree(nas) == before
    tok.write_bytes(original)
    r = installer("stage", delta_case.delta, "--site", site)
    assert r.exit_code == 0, r.output


def test_a_delta_whose_patch_rebuilds_other_bytes_is_refused_at_install(
        bundles: Bundles, delta_case: DeltaCase, tmp_path: Path) -> None:
    w = bundles.world
    site = w.site(tmp_path / "s")
    for verb in ("load", "stage"):
        assert installer(verb, delta_case.base, "--site", site).exit_code == 0
    nas, state = tmp_path / "s" / "nas", tmp_path / "s" / "state"
    before = tree(nas)
    installed = json.loads((state / "installed.json").read_text())

    r = bundle("verify", delta_case.doctored, "--pubkey", w.keys["release"].pub, "--base", delta_case.base)
    assert r.exit_code == EXIT_VERIFY, r.output
    assert "tokenizer.json" in r.stderr
    # (load has nothing to rebuild here: the bundle has no images; the model file goes to the NAS)
    r = installer("stage", delta_case.doctored, "--site", site)
    assert r.exit_code == EXIT_VERIFY, r.output
    assert "tokenizer.json" in r.stderr and "model tok 1.2" in r.stderr, r.stderr
    assert tree(nas) == before, "nothing of the refused delta may reach the NAS"
    assert json.loads((state / "installed.json").read_text()) == installed

    # The control: the intact delta rebuilds the edited tokenizer, byte for byte.
    r = bundle("verify", delta_case.delta, "--pubkey", w.keys["release"].pub, "--base", delta_case.base)
    assert r.exit_code == 0 and "rebuilt and checked" in r.stdout, r.output
    r = installer("stage", delta_case.delta, "--site", site)
    assert r.exit_code == 0, r.output
    staged = nas / "embeddings/tok/1.2/tokenizer.json"
    assert sha256_file(staged) == sha256_file(w.base / "tok" / "good" / "tokenizer.json")
