"""Signatures, attestations and referrers attached upstream travel with their images.

An upstream registry (the real ``docker-registry``, distribution 2.8: no referrers API, so the
OCI 1.1 referrers tag schema is what it holds) gets an image the test builds, a cosign-style
``sha256-<hex>.sig`` signature made here with ``cryptography`` (the simple-signing payload,
its ECDSA P-256 signature in the layer annotation, exactly as cosign writes them), and an SBOM
artifact whose ``subject`` is the image, listed in the ``sha256-<hex>`` fallback index. The
real ``bundle lock``/``create`` carry them; the real ``installer load`` pushes them to a second
registry, which must serve every one under the upstream's digest. A spec that requires a
signature refuses an unsigned image, a signature by another key, and a payload naming another
image, at ``bundle create``.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import http.client
import http.server
import io
import json
import tarfile
import threading
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner, Result
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa

from bundler.cli import main as bundle_main
from bundler.spec import load_spec
from edgebundle.attached import attached_by_tag, tag_for
from edgebundle.registry import Registry
from edgebundle.mediatypes import PAYLOAD_ROOT
from edgebundle.signing import generate_keypair, load_private_key, sign
from installer.cli import main as installer_main
from edgebundle.root import MalformedRootError, parse_root
from tests.fixtures.bundles import read_root, write_site
from tests.fixtures.registry import RegistryFactory, RegistryProcess

pytestmark = pytest.mark.timeout(180)

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
SIMPLESIGNING = "application/vnd.dev.cosign.simplesigning.v1+json"
SBOM_TYPE = "application/spdx+json"
REPO = "app/signed"


def canonical(doc: Any) -> bytes:
    return json.dumps(doc, separators=(",", ":"), sort_keys=True).encode()


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def put_blob(reg: Registry, data: bytes) -> dict[str, Any]:
    digest = sha(data)
    reg.push_blob(REPO, digest, len(data), io.BytesIO(data))
    return {"digest": digest, "size": len(data)}


def put_manifest(reg: Registry, doc: dict[str, Any], ref: str | None = None) -> tuple[str, bytes]:
    data = canonical(doc)
    reg.put_manifest(REPO, ref or sha(data), data, doc["mediaType"])
    return sha(data), data


def push_image(reg: Registry, tag: str, text: bytes) -> str:
    """A one-layer linux/amd64 OCI image; returns its manifest digest."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo("app/hello.txt")
        info.size, info.mtime = len(text), 0
        tar.addfile(info, io.BytesIO(text))
    raw = buf.getvalue()
    layer = gzip.compress(raw, mtime=0)
    config = canonical({"architecture": "amd64", "os": "linux",
                        "rootfs": {"type": "layers", "diff_ids": [sha(raw)]}, "config": {}})
    return put_manifest(reg, {
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", **put_blob(reg, config)},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", **put_blob(reg, layer)}],
    }, tag)[0]


def cosign_sign(reg: Registry, host: str, subject: str, key: Any, *, names: str | None = None) -> str:
    """Attach a key-based cosign signature of ``subject`` (its payload naming ``names``, by default
    the subject itself) under ``sha256-<hex>.sig``, as cosign does; returns the .sig digest."""
    payload = canonical({"critical": {"identity": {"docker-reference": f"{host}/{REPO}"},
                                      "image": {"docker-manifest-digest": names or subject},
                                      "type": "cosign container image signature"},
                         "optional": None})
    if isinstance(key, ec.EllipticCurvePrivateKey):
        sig = key.sign(payload, ec.ECDSA(hashes.SHA256()))
    elif isinstance(key, rsa.RSAPrivateKey):
        sig = key.sign(payload, padding.PKCS1v15(), hashes.SHA256())
    else:
        sig = key.sign(payload)
    layer = put_blob(reg, payload)
    config = put_blob(reg, canonical({"architecture": "", "os": "", "config": {},
                                      "rootfs": {"type": "layers", "diff_ids": [layer["digest"]]}}))
    return put_manifest(reg, {
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", **config},
        "layers": [{"mediaType": SIMPLESIGNING, **layer,
                    "annotations": {"dev.cosignproject.cosign/signature": base64.b64encode(sig).decode()}}],
    }, "sha256-" + subject.removeprefix("sha256:") + ".sig")[0]


def attach_sbom(reg: Registry, subject: str, subject_size: int) -> tuple[str, str]:
    """An SBOM artifact naming ``subject``, listed by the referrers fallback tag (OCI 1.1 §
    "Referrers Tag Schema"); returns (artifact digest, fallback index digest)."""
    empty = put_blob(reg, b"{}")
    sbom = put_blob(reg, canonical({"spdxVersion": "SPDX-2.3", "name": "app", "packages": []}))
    artifact, data = put_manifest(reg, {
        "schemaVersion": 2, "mediaType": OCI_MANIFEST, "artifactType": SBOM_TYPE,
        "config": {"mediaType": "application/vnd.oci.empty.v1+json", **empty},
        "layers": [{"mediaType": SBOM_TYPE, **sbom}],
        "subject": {"mediaType": OCI_MANIFEST, "digest": subject, "size": subject_size},
    })
    index, _ = put_manifest(reg, {
        "schemaVersion": 2, "mediaType": OCI_INDEX,
        "manifests": [{"mediaType": OCI_MANIFEST, "digest": artifact, "size": len(data),
                       "artifactType": SBOM_TYPE}],
    }, "sha256-" + subject.removeprefix("sha256:"))
    return artifact, index


def pem(key: Any, path: Path) -> Path:
    path.write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM,
                                                   serialization.PublicFormat.SubjectPublicKeyInfo))
    return path


def write_spec(directory: Path, ref: str, signatures: dict[str, Any] | None) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    image: dict[str, Any] = {"ref": ref}
    if signatures is not None:
        image["signatures"] = signatures
    spec = directory / "bundle.yaml"
    spec.write_text(yaml.safe_dump({"apiVersion": "edgebundle/v1", "kind": "Bundle",
                                    "metadata": {"name": "signed", "version": "1.0.0", "compatible": "x"},
                                    "spec": {"images": [image]}}))
    return spec


def bundle(*args: Any) -> Result:
    return CliRunner().invoke(bundle_main, [str(a) for a in args])


def output(r: Result) -> str:
    return r.stdout + (r.stderr if r.stderr_bytes is not None else "")


@pytest.fixture
def upstream(registry: RegistryProcess) -> tuple[RegistryProcess, Registry]:
    with Registry(registry.host) as reg:
        yield registry, reg


def test_signature_and_referrer_reach_the_site_registry_with_upstream_digests(
        upstream: tuple[RegistryProcess, Registry], registry_factory: RegistryFactory, tmp_path: Path) -> None:
    proc, reg = upstream
    image = push_image(reg, "1.0", b"hello\n")
    image_size = len(reg.get_manifest(REPO, image).data)
    signer = ec.generate_private_key(ec.SECP256R1())
    sig = cosign_sign(reg, proc.host, image, signer)
    artifact, referrers = attach_sbom(reg, image, image_size)

    spec = write_spec(tmp_path / "build", f"{proc.host}/{REPO}:1.0",
                      {"keys": [str(pem(signer, tmp_path / "cosign.pub"))]})
    r = bundle("lock", spec, "--json")
    assert r.exit_code == 0, output(r)
    locked = json.loads((spec.parent / "bundles.lock").read_text())["images"][0]
    assert sorted((a["kind"], a["tag"], a["digest"]) for a in locked["attached"]) == sorted([
        ("signature", "sha256-" + image[7:] + ".sig", sig), ("referrers", "sha256-" + image[7:], referrers)])

    key, pub = generate_keypair("release", tmp_path / "keys")
    out = tmp_path / "signed.tar"
    r = bundle("create", spec, "--key", key, "-o", out, "--locked")
    assert r.exit_code == 0, output(r)

    # The signed root lists them under the image; a root that would put one under another tag
    # (the image's own, say) is refused before anything acts on it.
    root = read_root(out).to_dict()
    assert {(a["kind"], a["tag"]) for a in root["images"][0]["attached"]} == {
        ("signature", "sha256-" + image[7:] + ".sig"), ("referrers", "sha256-" + image[7:])}
    for bad_tag in ("1.0", "sha256-" + image[7:] + ".att", "sha256-" + sig[7:] + ".sig"):
        root["images"][0]["attached"][0]["tag"] = bad_tag
        with pytest.raises(MalformedRootError, match="may not use the tag"):
            parse_root(canonical(root))
    root["images"][0]["attached"][0]["tag"] = "sha256-" + image[7:] + ".sig"
    root["images"][0]["attached"].append({**root["images"][0]["attached"][0], "digest": referrers})
    with pytest.raises(MalformedRootError, match="a second artifact under the tag"):
        parse_root(canonical(root))

    r = bundle("inspect", out, "--json")
    assert r.exit_code == 0, output(r)
    assert {(a["kind"], a["digest"]) for a in json.loads(r.stdout)["images"][0]["attached"]} == {
        ("signature", sig), ("referrers", referrers)}
    r = bundle("inspect", out)
    assert r.exit_code == 0 and "+ signature" in r.stdout and sig[:19] in r.stdout, output(r)

    site_registry = registry_factory()
    site = write_site(tmp_path / "site", site_registry.host, trust=[pub], compatible="x")
    r = CliRunner().invoke(installer_main, ["load", str(out), "--site", str(site)])
    assert r.exit_code == 0, output(r)
    with Registry(site_registry.host) as site_reg:
        assert site_reg.has_manifest(REPO, "1.0") == image
        assert site_reg.has_manifest(REPO, "sha256-" + image[7:] + ".sig") == sig
        assert site_reg.has_manifest(REPO, "sha256-" + image[7:]) == referrers
        assert site_reg.has_manifest(REPO, artifact) == artifact
        for ref in ("1.0", sig, referrers, artifact):  # the exact upstream bytes
            assert site_reg.get_manifest(REPO, ref).data == reg.get_manifest(REPO, ref).data
        served = site_reg.get_manifest(REPO, artifact).json()
        for desc in [served["config"], *served["layers"]]:
            assert site_reg.has_blob(REPO, desc["digest"])
        assert sorted(site_reg.list_tags(REPO)) == sorted(["1.0", "sha256-" + image[7:], "sha256-" + image[7:] + ".sig"])

    # Loading again pushes nothing: every tag and manifest is already there.
    writes = sum(1 for e in site_registry.requests() if e.method in ("PUT", "POST", "PATCH"))
    r = CliRunner().invoke(installer_main, ["load", str(out), "--site", str(site)])
    assert r.exit_code == 0, output(r)
    assert sum(1 for e in site_registry.requests() if e.method in ("PUT", "POST", "PATCH")) == writes

    # status shows the signature and the referrers index with their image, not as images of their own
    r = CliRunner().invoke(installer_main, ["status", "--site", str(site), "--json"])
    assert r.exit_code == 0, output(r)
    listed = {(im["tag"], im.get("attachedTo"), im.get("kind")) for im in json.loads(r.stdout)["registry"]["images"]}
    assert listed == {("1.0", None, None), ("sha256-" + image[7:] + ".sig", image, "signature"),
                      ("sha256-" + image[7:], image, "referrers")}
    r = CliRunner().invoke(installer_main, ["status", "--site", str(site)])
    lines = r.stdout.splitlines()
    at = next(i for i, line in enumerate(lines) if line.startswith(f"  {REPO}:1.0 "))
    assert sorted(line.split()[:2] for line in lines[at + 1:at + 3]) == [
        ["referrers", "sha256-" + image[7:]], ["signature", "sha256-" + image[7:] + ".sig"]], r.stdout


def test_locked_create_refuses_a_signature_added_after_the_lock(
        upstream: tuple[RegistryProcess, Registry], tmp_path: Path) -> None:
    proc, reg = upstream
    image = push_image(reg, "1.0", b"late\n")
    spec = write_spec(tmp_path / "build", f"{proc.host}/{REPO}:1.0", None)
    assert bundle("lock", spec).exit_code == 0
    cosign_sign(reg, proc.host, image, ec.generate_private_key(ec.SECP256R1()))
    key, _ = generate_keypair("release", tmp_path / "keys")
    r = bundle("create", spec, "--key", key, "-o", tmp_path / "b.tar", "--locked")
    assert r.exit_code == 1, output(r)
    assert f"{proc.host}/{REPO}:1.0: its attached signatures" in output(r)
    assert not (tmp_path / "b.tar").exists()


@pytest.mark.parametrize("case", ["unsigned", "other-key", "other-digest"])
def test_required_signature_missing_or_wrong_is_refused_at_create(
        case: str, upstream: tuple[RegistryProcess, Registry], tmp_path: Path) -> None:
    proc, reg = upstream
    image = push_image(reg, "1.0", b"refuse\n")
    other = push_image(reg, "2.0", b"another image\n")
    trusted = ec.generate_private_key(ec.SECP256R1())
    if case == "other-key":
        cosign_sign(reg, proc.host, image, ec.generate_private_key(ec.SECP256R1()))
    elif case == "other-digest":  # a genuine signature by the trusted key, of another image
        cosign_sign(reg, proc.host, image, trusted, names=other)
    ref = f"{proc.host}/{REPO}:1.0"
    pub = pem(trusted, tmp_path / "cosign.pub")
    key, _ = generate_keypair("release", tmp_path / "keys")
    expected = {"unsigned": f"image {ref} ({image}) is not signed",
                "other-key": f"no signature in sha256-{image[7:]}.sig verifies with the key {pub}",
                "other-digest": f"the signature by {pub} vouches for {other}, not for this image"}[case]

    # Locked before the spec asked for a signature (the requirement does not change the lock):
    # create itself checks the carried signature.
    spec = write_spec(tmp_path / "build", ref, None)
    assert bundle("lock", spec).exit_code == 0
    write_spec(tmp_path / "build", ref, {"keys": [str(pub)]})
    r = bundle("create", spec, "--key", key, "-o", tmp_path / "b.tar", "--locked")
    assert r.exit_code == 4, output(r)
    assert ref in output(r) and expected in output(r)
    assert not (tmp_path / "b.tar").exists() and not list(tmp_path.glob("b.tar*"))

    r = bundle("lock", spec)  # and bundle lock refuses it the same way, before anything is pulled
    assert r.exit_code == 4 and expected in output(r), output(r)


@pytest.mark.parametrize("algorithm", ["ed25519", "rsa"])
def test_ed25519_and_rsa_signatures_and_a_presence_only_requirement(
        algorithm: str, upstream: tuple[RegistryProcess, Registry], tmp_path: Path) -> None:
    proc, reg = upstream
    image = push_image(reg, "1.0", b"ed\n")
    signer = (ed25519.Ed25519PrivateKey.generate() if algorithm == "ed25519"
              else rsa.generate_private_key(public_exponent=65537, key_size=2048))
    ref = f"{proc.host}/{REPO}:1.0"
    key, _ = generate_keypair("release", tmp_path / "keys")
    spec = write_spec(tmp_path / "a", ref, {"required": True})
    r = bundle("lock", spec)
    assert r.exit_code == 4 and f"image {ref} ({image}) is not signed" in output(r), output(r)
    cosign_sign(reg, proc.host, image, signer)
    assert bundle("lock", spec).exit_code == 0
    spec = write_spec(tmp_path / "b", ref, {"keys": [str(pem(signer, tmp_path / "signer.pub"))]})
    r = bundle("create", spec, "--key", key, "-o", tmp_path / "b.tar")
    assert r.exit_code == 0, output(r)
    other = write_spec(tmp_path / "c", ref, {"keys": [str(pem(ec.generate_private_key(ec.SECP256R1()),
                                                                 tmp_path / "other.pub"))]})
    r = bundle("create", other, "--key", key, "-o", tmp_path / "c.tar")
    assert r.exit_code == 4 and f"verifies with the key {tmp_path / 'other.pub'}" in output(r), output(r)


@pytest.mark.parametrize("signatures, message", [
    ({"requried": True}, "requried"),
    ({"keys": "cosign.pub"}, "signatures.keys"),
    ({"keys": ["missing.pub"]}, "spec.images[0].signatures.keys[0]"),
    ({"keys": ["not-a-key.pub"]}, "is not a PEM public key"),
    ({"keys": ["p384.pub"]}, "secp384r1"),
    ({"keys": ["cosign.pub"], "required": False}, "required: false"),
])
def test_spec_signature_fields_are_checked(signatures: dict[str, Any], message: str, tmp_path: Path) -> None:
    d = tmp_path / "spec"
    d.mkdir()
    pem(ec.generate_private_key(ec.SECP256R1()), d / "cosign.pub")
    pem(ec.generate_private_key(ec.SECP384R1()), d / "p384.pub")
    (d / "not-a-key.pub").write_text("hello\n")
    spec = write_spec(d, "127.0.0.1:1/app/signed:1.0", signatures)
    r = bundle("lock", spec)
    assert r.exit_code == 2, output(r)
    assert message in output(r) and "Traceback" not in output(r)


def test_spec_without_signatures_requires_none(tmp_path: Path) -> None:
    loaded = load_spec(write_spec(tmp_path, "127.0.0.1:1/app/signed:1.0", None)).images[0]
    assert not loaded.signature_required and loaded.signature_keys == ()


class ReferrersFront:
    """A referrers API in front of the real registry: ``GET /v2/<repo>/referrers/<digest>``
    answers from ``listings``; every other GET/HEAD goes to the registry unchanged.

    A stand-in (tests/README.md): Debian's docker-registry 2.8 has no referrers API, and no
    registry that has one is packaged for Debian.
    """

    def __init__(self, backend: str) -> None:
        self.listings: dict[str, bytes] = {}
        self.asked: list[str] = []
        front = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def _answer(self, body: bool) -> None:
                if "/referrers/" in self.path:
                    front.asked.append(self.path)
                    data = front.listings.get(self.path.rsplit("/", 1)[-1])
                    if data is None:  # the API exists: no referrers is an empty index
                        data = canonical({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": []})
                    self.send_response(200)
                    self.send_header("Content-Type", OCI_INDEX)
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data if body else b"")
                    return
                conn = http.client.HTTPConnection(backend, timeout=10)
                conn.request(self.command, self.path, headers={k: v for k, v in self.headers.items()
                                                               if k.lower() != "host"})
                resp = conn.getresponse()
                data = resp.read()
                self.send_response(resp.status)
                for k, v in resp.getheaders():
                    if k.lower() not in ("connection", "transfer-encoding", "date", "server"):
                        self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data if body else b"")
                conn.close()

            def do_GET(self) -> None:  # noqa: N802 (http.server naming)
                self._answer(True)

            def do_HEAD(self) -> None:  # noqa: N802
                self._answer(False)

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.host = f"127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_referrers_from_the_api_reach_the_site_under_the_fallback_tag(
        upstream: tuple[RegistryProcess, Registry], registry_factory: RegistryFactory, tmp_path: Path) -> None:
    proc, reg = upstream
    image = push_image(reg, "1.0", b"api\n")
    image_size = len(reg.get_manifest(REPO, image).data)
    empty = put_blob(reg, b"{}")
    descriptors = []
    for name in ("sbom", "provenance"):  # two referrers, pushed by digest only (no fallback tag)
        layer = put_blob(reg, canonical({"name": name}))
        digest, data = put_manifest(reg, {
            "schemaVersion": 2, "mediaType": OCI_MANIFEST, "artifactType": f"application/x.{name}",
            "config": {"mediaType": "application/vnd.oci.empty.v1+json", **empty},
            "layers": [{"mediaType": f"application/x.{name}", **layer}],
            "subject": {"mediaType": OCI_MANIFEST, "digest": image, "size": image_size}})
        descriptors.append({"mediaType": OCI_MANIFEST, "digest": digest, "size": len(data),
                            "artifactType": f"application/x.{name}"})
    front = ReferrersFront(proc.host)
    try:
        # The API lists them in whatever order it likes; the lock pins them in digest order.
        front.listings[image] = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX,
                                            "manifests": sorted(descriptors, key=lambda d: d["digest"],
                                                                reverse=True)}).encode()
        expected = json.dumps({"manifests": sorted(descriptors, key=lambda d: d["digest"]),
                               "mediaType": OCI_INDEX, "schemaVersion": 2},
                              separators=(",", ":"), sort_keys=True).encode()
        spec = write_spec(tmp_path / "build", f"{front.host}/{REPO}:1.0", None)
        r = bundle("lock", spec)
        assert r.exit_code == 0, output(r)
        assert front.asked, "the lock must ask the referrers API"
        locked = json.loads((spec.parent / "bundles.lock").read_text())["images"][0]["attached"]
        assert locked == [{"kind": "referrers", "subject": image, "tag": "sha256-" + image[7:],
                           "digest": sha(expected), "mediaType": OCI_INDEX, "via": "api"}]
        key, pub = generate_keypair("release", tmp_path / "keys")
        out = tmp_path / "api.tar"
        r = bundle("create", spec, "--key", key, "-o", out, "--locked")
        assert r.exit_code == 0, output(r)

        front.listings[image] = canonical({"schemaVersion": 2, "mediaType": OCI_INDEX,
                                           "manifests": descriptors[:1]})  # one referrer went away
        r = bundle("create", spec, "--key", key, "-o", tmp_path / "again.tar", "--locked")
        assert r.exit_code == 1 and "attached signatures, attestations or referrers changed" in output(r)
    finally:
        front.close()

    site_registry = registry_factory()
    site = write_site(tmp_path / "site", site_registry.host, trust=[pub], compatible="x")
    r = CliRunner().invoke(installer_main, ["load", str(out), "--site", str(site)])
    assert r.exit_code == 0, output(r)
    with Registry(site_registry.host) as site_reg:
        assert site_reg.get_manifest(REPO, "sha256-" + image[7:]).data == expected
        for d in descriptors:
            assert site_reg.get_manifest(REPO, d["digest"]).data == reg.get_manifest(REPO, d["digest"]).data


def test_load_refuses_a_signed_root_attaching_to_what_is_not_the_image(
        upstream: tuple[RegistryProcess, Registry], registry_factory: RegistryFactory, tmp_path: Path) -> None:
    """Signed is not safe: a root whose attached artifact names a subject that is not one of the
    image's manifests (here its config, under the tag that subject would allow) is refused by
    ``load`` before the first write."""
    proc, reg = upstream
    image = push_image(reg, "1.0", b"subject\n")
    cosign_sign(reg, proc.host, image, ec.generate_private_key(ec.SECP256R1()))
    spec = write_spec(tmp_path / "build", f"{proc.host}/{REPO}:1.0", None)
    key, pub = generate_keypair("release", tmp_path / "keys")
    out = tmp_path / "bundle-dir"
    assert bundle("create", spec, "--key", key, "-o", out).exit_code == 0
    root = json.loads(base64.b64decode(json.loads((out / "edgebundle/root.dsse.json").read_bytes())["payload"]))
    config = reg.get_manifest(REPO, image).json()["config"]["digest"]
    attached = root["images"][0]["attached"][0]
    attached.update(subject=config, tag="sha256-" + config[7:] + ".sig")
    (out / "edgebundle/root.dsse.json").write_bytes(sign(canonical(root), PAYLOAD_ROOT, [load_private_key(key)]))

    site_registry = registry_factory()
    site = write_site(tmp_path / "site", site_registry.host, trust=[pub], compatible="x")
    r = CliRunner().invoke(installer_main, ["load", str(out), "--site", str(site)])
    assert r.exit_code == 4, output(r)
    assert f"attached sha256-{config[7:]}.sig names {config}, not one of the image's manifests" in output(r)
    assert not [e for e in site_registry.requests() if e.method in ("PUT", "POST", "PATCH")]


def test_an_attached_tag_names_its_subject_and_kind() -> None:
    subject = "sha256:" + "ab" * 32
    for kind in ("signature", "attestation", "sbom", "referrers"):
        assert attached_by_tag(tag_for(subject, kind)) == (subject, kind)
    for tag in ("1.0", "latest", "sha256-" + "ab" * 31, "sha256-" + "ab" * 32 + ".foo",
                "sha256-" + "ab" * 32 + ".sig.sig", "sha256-" + "AB" * 32 + ".sig", "sha256-"):
        assert attached_by_tag(tag) is None, tag
