"""The bundle's SBOM (docs/SUPPLY_CHAIN.md): CycloneDX 1.6, signed, from images the test builds.

The images are written here, byte by byte (a Debian-like image with a dpkg database, distroless
``status.d``, Python dist-info in gzip, zstd and plain layers, whiteouts and an opaque directory;
an Alpine-like image with an apk database), pushed to the session's source registry and bundled
by the real builder. Every expected name, version and purl below is written by hand from what the
test put in the layers; the model card is checked against the GGUF as the ``gguf`` package reads it.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import json
import tarfile
import tracemalloc
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import gguf
import pytest
import zstandard
from click.testing import CliRunner
from cyclonedx.schema import SchemaVersion
from cyclonedx.validation.json import JsonStrictValidator

from bundler.cli import main as bundle_main
from bundler.layerscan import MAX_DATABASE_BYTES, LayerScanError, ScanCache, default_scan_cache, scan_layer
from bundler.wheelhouse import default_wheel_cache
from bundler.sbom import scan_image
from edgebundle import layout
from edgebundle import mediatypes as mt
from edgebundle.registry import Registry
from edgebundle.root import ImageEntry
from examples.images import Layout, canonical_json, push_layout
from installer.cli import main as installer_main
from tests.fixtures.bundles import BundleWorld, flip_byte, member_location
from tests.fixtures.digests import sha256_file
from tests.fixtures.models import fetched_models

DPKG_STATUS = b"""Package: base-files
Status: install ok installed
Priority: required
Architecture: amd64
Version: 12.4+deb12u5
Description: Debian base system miscellaneous files
 This package contains the basic filesystem hierarchy.

Package: libc6
Status: install ok installed
Architecture: amd64
Source: glibc
Version: 2.36-9+deb12u4

Package: tzdata
Status: install ok installed
Architecture: all
Version: 2024a-0+deb12u1

Package: oldpkg
Status: deinstall ok config-files
Architecture: amd64
Version: 1.0-1

Package: epochpkg
Status: install ok installed
Architecture: amd64
Version: 1:2.3-4
"""
DISTROLESS_ENTRY = b"Package: nodejs-lite\nVersion: 20.1-1\nArchitecture: amd64\n"
APK_INSTALLED = b"""C:Q1abc=
P:musl
V:1.2.4-r2
A:x86_64
L:MIT
o:musl

C:Q1def=
P:busybox
V:1.36.1-r5
A:x86_64
L:GPL-2.0-only
o:busybox
"""
OS_RELEASE = b'PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nID=debian\nVERSION_ID="12"\n'
SITE = "usr/lib/python3/dist-packages"
VENV = "opt/venv/lib/python3.11/site-packages"
DEEP = "srv/" + "d" * 120 + "/site-packages"  # past ustar's 100-byte name: a pax header carries it


def metadata(name: str, version: str, lic: str = "") -> bytes:
    return f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n{lic}\nA long description.\n".encode()


def tar_bytes(files: dict[str, bytes], fmt: int = tarfile.GNU_FORMAT) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mtime = len(data), 1_700_000_000
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def push_images(world: BundleWorld, root: Path) -> dict[str, dict[str, Any]]:
    """Write and push the two images; ``repo:tag`` -> {manifest digest, platform}."""
    lay = Layout(root)
    debian_layers = [
        (mt.OCI_LAYER_GZIP, gzip.compress(tar_bytes({
            "etc/os-release": OS_RELEASE,
            "var/lib/dpkg/status": DPKG_STATUS,
            "var/lib/dpkg/status.d/nodejs-lite": DISTROLESS_ENTRY,
            "var/lib/dpkg/status.d/nodejs-lite.md5sums": b"0123 /usr/bin/node\n",
            f"{SITE}/requests-2.31.0.dist-info/METADATA": metadata("requests", "2.31.0", "License: Apache 2.0"),
            f"{SITE}/My_Tool-0.9.dist-info/METADATA": metadata("My_Tool", "0.9", "License-Expression: MIT"),
            f"{VENV}/six-1.16.0.dist-info/METADATA": metadata("six", "1.16.0"),
        }), mtime=0)),
        # A later layer deletes requests' record (whiteout) and empties the venv (opaque directory).
        (mt.OCI_LAYER_ZSTD, zstandard.ZstdCompressor().compress(tar_bytes({
            f"{SITE}/.wh.requests-2.31.0.dist-info": b"",
            f"{VENV}/.wh..wh..opq": b"",
            f"{VENV}/attrs-23.1.0.dist-info/METADATA": metadata("attrs", "23.1.0", "License: MIT"),
        }))),
        (mt.OCI_LAYER_TAR, tar_bytes({f"{DEEP}/pax_pkg-3.0.dist-info/METADATA": metadata("pax_pkg", "3.0")},
                                     fmt=tarfile.PAX_FORMAT)),
    ]
    alpine_layers = [(mt.OCI_LAYER_GZIP, gzip.compress(tar_bytes({"lib/apk/db/installed": APK_INSTALLED}), mtime=0))]
    out, index = {}, []
    for ref, layers in (("sbom/debian-app:1.0", debian_layers), ("sbom/alpine-app:1.0", alpine_layers)):
        descs = []
        for media, blob in layers:
            digest, size = lay.add(blob)
            descs.append({"mediaType": media, "digest": digest, "size": size})
        config = canonical_json({"architecture": "amd64", "os": "linux",
                                 "rootfs": {"type": "layers", "diff_ids": [d["digest"] for d in descs]}})
        cdigest, csize = lay.add(config)
        manifest = canonical_json({"schemaVersion": 2, "mediaType": mt.OCI_MANIFEST, "layers": descs,
                                   "config": {"mediaType": mt.OCI_CONFIG, "digest": cdigest, "size": csize}})
        mdigest, msize = lay.add(manifest)
        assert mdigest == "sha256:" + hashlib.sha256(manifest).hexdigest()
        index.append({"mediaType": mt.OCI_MANIFEST, "digest": mdigest, "size": msize,
                      "annotations": {"org.opencontainers.image.ref.name": ref}})
        out[ref] = {"digest": mdigest}
    lay.write_index(index)
    with Registry(world.source.host) as reg:
        push_layout(root, reg)
    return out


@pytest.fixture(scope="module")
def sbom_bundle(bundle_world: BundleWorld, bundle_factory: Any, tmp_path_factory: pytest.TempPathFactory) -> Any:
    pushed = push_images(bundle_world, tmp_path_factory.mktemp("sbom-images"))
    built = bundle_factory(name="sbom-edge", images=["sbom/debian-app:1.0", "sbom/alpine-app:1.0"],
                           models=["smollm2"], manifests=True)
    return built, pushed


def run_bundle(*args: Any) -> Any:
    return CliRunner().invoke(bundle_main, [str(a) for a in args])


def sbom_of(built: Any) -> dict[str, Any]:
    r = run_bundle("inspect", built.path, "--sbom", "--pubkey", built.pub)
    assert r.exit_code == 0, r.output + r.stderr
    return json.loads(r.stdout)


def by_ref(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["bom-ref"]: c for c in doc["components"]}


def packages_of(doc: dict[str, Any], image_ref: str) -> dict[str, dict[str, Any]]:
    """purl -> component of the packages the image's dependency entry lists."""
    comps = by_ref(doc)
    deps = next(d for d in doc["dependencies"] if d["ref"] == image_ref)
    return {comps[r]["purl"]: comps[r] for r in deps.get("dependsOn", [])}


def test_image_packages_honour_whiteouts_and_carry_purls(sbom_bundle: Any) -> None:
    built, pushed = sbom_bundle
    doc = sbom_of(built)
    host = built.root.images[0].ref.split("/")[0]
    deb_ref = "image:sbom/debian-app:1.0|linux/amd64"
    image = by_ref(doc)[deb_ref]
    assert image["type"] == "container" and image["name"] == "sbom/debian-app" and image["version"] == "1.0"
    assert image["hashes"] == [{"alg": "SHA-256", "content": pushed["sbom/debian-app:1.0"]["digest"][7:]}]
    assert image["purl"] == (f"pkg:oci/debian-app@sha256:{pushed['sbom/debian-app:1.0']['digest'][7:]}"
                             f"?arch=amd64&os=linux&repository_url={host}/sbom/debian-app&tag=1.0")
    pkgs = packages_of(doc, deb_ref)
    assert sorted(pkgs) == sorted([
        "pkg:deb/debian/base-files@12.4%2Bdeb12u5?arch=amd64&distro=debian-12",
        "pkg:deb/debian/libc6@2.36-9%2Bdeb12u4?arch=amd64&distro=debian-12",
        "pkg:deb/debian/tzdata@2024a-0%2Bdeb12u1?arch=all&distro=debian-12",
        "pkg:deb/debian/epochpkg@1:2.3-4?arch=amd64&distro=debian-12",
        "pkg:deb/debian/nodejs-lite@20.1-1?arch=amd64&distro=debian-12",
        "pkg:pypi/my-tool@0.9",
        "pkg:pypi/attrs@23.1.0",
        "pkg:pypi/pax-pkg@3.0",
    ])  # not oldpkg (config-files only), requests (whiteout), six (opaque venv)
    libc = pkgs["pkg:deb/debian/libc6@2.36-9%2Bdeb12u4?arch=amd64&distro=debian-12"]
    assert (libc["type"], libc["name"], libc["version"]) == ("library", "libc6", "2.36-9+deb12u4")
    props = {p["name"]: p["value"] for p in libc["properties"]}
    assert props == {"edgebundle:found-in": "var/lib/dpkg/status", "edgebundle:source-package": "glibc"}
    tool = pkgs["pkg:pypi/my-tool@0.9"]
    assert (tool["name"], tool["version"], tool["licenses"]) == ("My_Tool", "0.9", [{"license": {"name": "MIT"}}])
    assert {p["value"] for p in pkgs["pkg:pypi/pax-pkg@3.0"]["properties"]} == {
        f"{DEEP}/pax_pkg-3.0.dist-info/METADATA"}

    apk = packages_of(doc, "image:sbom/alpine-app:1.0|linux/amd64")
    assert sorted(apk) == ["pkg:apk/alpine/busybox@1.36.1-r5?arch=x86_64", "pkg:apk/alpine/musl@1.2.4-r2?arch=x86_64"]
    assert apk["pkg:apk/alpine/busybox@1.36.1-r5?arch=x86_64"]["licenses"] == [{"license": {"name": "GPL-2.0-only"}}]


def test_the_model_card_is_read_from_the_real_smollm2_gguf(sbom_bundle: Any) -> None:
    built, _ = sbom_bundle
    doc = sbom_of(built)
    path = fetched_models().smollm2_gguf
    reader = gguf.GGUFReader(path)

    def field(key: str) -> Any:
        f = reader.fields[key]
        value = f.parts[f.data[0]]
        return bytes(value).decode() if f.types[0] == gguf.GGUFValueType.STRING else int(value[0])

    arch = field("general.architecture")
    assert arch == "llama"  # SmolLM2 is a llama-architecture model
    params = sum(int(t.n_elements) for t in reader.tensors)
    assert 130e6 < params < 140e6  # SmolLM2-135M
    model = by_ref(doc)["model:llm/smollm2-135m-instruct@q4_1"]
    assert model["type"] == "machine-learning-model"
    digest, _ = sha256_file(path)
    assert [f["hashes"] for f in model["components"]] == [[{"alg": "SHA-256", "content": digest[7:]}]]
    card = model["modelCard"]
    assert card["modelParameters"]["modelArchitecture"] == arch
    assert card["modelParameters"]["task"] == "text-generation"
    facts = {p["name"]: p["value"] for p in card["properties"]}
    assert facts["format"] == "gguf"
    assert facts["quantization"] == gguf.LlamaFileType(field("general.file_type")).name.removeprefix("MOSTLY_")
    assert facts["parameterCount"] == str(params)
    assert facts["contextLength"] == str(field(f"{arch}.context_length"))
    if "general.license" in reader.fields:
        assert facts["license"] == field("general.license")
        assert model["licenses"] == [{"license": {"name": field("general.license")}}]


def test_manifests_are_hashed_as_the_bundle_pins_them_and_the_document_validates(sbom_bundle: Any) -> None:
    built, _ = sbom_bundle
    doc = sbom_of(built)
    files = [c for c in doc["components"] if c["bom-ref"].startswith("manifest:")]
    assert files, "the bundle has manifests"
    spec_dir = Path(json.loads(built.spec_path.read_text())["spec"]["manifests"][0])
    for c in files:
        assert c["type"] == "file"
        expected = hashlib.sha256((spec_dir / c["name"]).read_bytes()).hexdigest()
        assert c["hashes"] == [{"alg": "SHA-256", "content": expected}], c["name"]
    assert doc["bomFormat"] == "CycloneDX" and doc["specVersion"] == "1.6"
    assert JsonStrictValidator(SchemaVersion.V1_6).validate_str(json.dumps(doc)) is None
    assert doc["metadata"]["component"]["name"] == "sbom-edge"


def test_a_tampered_sbom_fails_verification(sbom_bundle: Any, tmp_path: Path) -> None:
    built, _ = sbom_bundle
    copy = built.copy(tmp_path)
    flip_byte(copy.path, layout.SBOM)
    r = run_bundle("verify", copy.path, "--pubkey", built.pub)
    assert r.exit_code == 4, r.output + r.stderr
    assert layout.SBOM in r.output + r.stderr
    r = run_bundle("inspect", copy.path, "--sbom", "--pubkey", built.pub)
    assert r.exit_code == 4 and not r.stdout.strip()


def test_inspect_sbom_needs_a_key_and_a_signing_one(sbom_bundle: Any, bundle_world: BundleWorld) -> None:
    built, _ = sbom_bundle
    r = run_bundle("inspect", built.path, "--sbom")
    assert r.exit_code == 2 and "--pubkey" in r.stderr
    _, other = bundle_world.key("stranger")
    r = run_bundle("inspect", built.path, "--sbom", "--pubkey", other)
    assert r.exit_code == 4 and not r.stdout.strip()


def test_an_oversized_status_file_is_refused_naming_it(tmp_path: Path) -> None:
    """A 33 MiB dpkg status: refused with the file and the bound named, read in bounded pieces."""
    layer = tmp_path / "layer.tar.gz"
    size = MAX_DATABASE_BYTES + 1024 * 1024
    stanza = b"Package: x\nStatus: install ok installed\nVersion: 1\n\n"
    with gzip.open(layer, "wb", compresslevel=1) as gz, tarfile.open(fileobj=gz, mode="w|") as tar:
        info = tarfile.TarInfo("var/lib/dpkg/status")
        info.size = size
        reader = io.BytesIO(stanza * (size // len(stanza)) + b"\n" * (size % len(stanza)))
        tar.addfile(info, reader)
    with open(layer, "rb") as raw, pytest.raises(LayerScanError) as e:
        scan_layer(raw, "image test (linux/amd64) layer sha256:0")
    assert "var/lib/dpkg/status" in e.value.message and str(MAX_DATABASE_BYTES) in e.value.message
    assert "image test" in e.value.message and e.value.hint


def test_installer_status_prints_the_installed_bundles_sbom_proven(sbom_bundle: Any, registry: Any,
                                                                  tmp_path: Path) -> None:
    built, _ = sbom_bundle
    site = built.site(tmp_path, registry.host)
    r = run_installer_cli("status", "--sbom", "--site", site)
    assert r.exit_code == 2 and "no bundle is installed" in r.output
    for step in ("load", "stage"):
        r = run_installer_cli(step, built.path, "--site", site)
        assert r.exit_code == 0, r.output
    r = run_installer_cli("status", "--sbom", "--site", site)
    assert r.exit_code == 0, r.output
    assert r.stdout.encode() == member_bytes(built.path, layout.SBOM) + b"\n"
    # The state directory is not trusted to be clean: a changed SBOM there is refused, naming it.
    kept = tmp_path / "state" / "bundles" / built.root_digest.split(":")[1] / "sbom.cdx.json"
    doc = json.loads(kept.read_bytes())
    doc["components"] = doc["components"][1:]
    kept.write_bytes(json.dumps(doc).encode())
    r = run_installer_cli("status", "--sbom", "--site", site)
    assert r.exit_code == 4 and "SBOM kept for bundle sbom-edge" in r.output


def run_installer_cli(*args: Any) -> Any:
    return CliRunner().invoke(installer_main, [str(a) for a in args])


def member_bytes(bundle: Path, member: str) -> bytes:
    path, offset, size = member_location(bundle, member)
    with open(path, "rb") as f:
        f.seek(offset)
        return f.read(size)


class _LargeLayer(io.RawIOBase):
    """A plain tar streamed from nothing: a ``size``-byte file of zeros, then a dpkg status file."""

    def __init__(self, size: int) -> None:
        big = tarfile.TarInfo("usr/share/big.bin")
        big.size = size
        status = tarfile.TarInfo("var/lib/dpkg/status")
        status_data = b"Package: late\nStatus: install ok installed\nVersion: 2\n"
        status.size = len(status_data)
        self._pieces: list[tuple[bytes, int]] = [
            (big.tobuf(tarfile.GNU_FORMAT), 1), (b"\0" * (1 << 20), size >> 20),
            (status.tobuf(tarfile.GNU_FORMAT) + status_data + b"\0" * (-len(status_data) % 512) + b"\0" * 1024, 1)]
        self._buf = b""

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        while not self._buf and self._pieces:
            data, times = self._pieces[0]
            self._buf = data
            self._pieces[0] = (data, times - 1)
            if times == 1:
                self._pieces.pop(0)
        n = min(len(b), len(self._buf))
        b[:n], self._buf = self._buf[:n], self._buf[n:]
        return n


def test_a_large_layer_is_read_in_bounded_memory() -> None:
    """256 MiB of layer pass through the scan while it holds a few MiB at most."""
    tracemalloc.start()
    try:
        scan = scan_layer(io.BufferedReader(_LargeLayer(256 << 20)), "image big (linux/amd64) layer sha256:1")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert [(p.name, p.version) for p in scan.packages["var/lib/dpkg/status"]] == [("late", "2")]
    assert peak < 16 << 20, f"peak {peak} bytes"


def test_a_layer_this_host_scanned_is_not_read_again_and_a_bad_cache_entry_is_scanned_again(
        tmp_path: Path) -> None:
    """The build host's layer-scan cache: the second SBOM of the same layers reads no layer, and says
    exactly what the first one said; an entry that does not parse exactly is ignored and rewritten."""
    layers = [gzip.compress(tar_bytes({"var/lib/dpkg/status": DPKG_STATUS, "etc/os-release": OS_RELEASE}), mtime=0),
              tar_bytes({"srv/.wh..wh..opq": b"", "usr/.wh.share": b"",
                         f"{VENV}/attrs-23.1.0.dist-info/METADATA": metadata("attrs", "23.1.0", "License: MIT")})]
    descs = [{"mediaType": mt.OCI_LAYER_GZIP if i == 0 else mt.OCI_LAYER_TAR, "size": len(b),
              "digest": "sha256:" + hashlib.sha256(b).hexdigest()} for i, b in enumerate(layers)]
    blobs = {d["digest"]: b for d, b in zip(descs, layers)}
    image = ImageEntry("127.0.0.1:5000/sbom/app:1.0", "sbom/app:1.0", "sbom/app", "1.0", "sha256:" + "0" * 64,
                       mt.OCI_MANIFEST, ["linux/amd64"], 0)
    opened: list[str] = []

    @contextlib.contextmanager
    def open_layer(_image: Any, digest: str, _size: int) -> Iterator[io.BytesIO]:
        opened.append(digest)
        yield io.BytesIO(blobs[digest])

    cache = ScanCache(tmp_path / "cache")

    def scan() -> Any:
        return scan_image(image, "linux/amd64", {"layers": descs}, open_layer, {}, cache)

    first = scan()
    assert opened == [d["digest"] for d in descs]
    assert {p.name for p in first.packages} >= {"base-files", "attrs"} and first.os_release["ID"] == "debian"
    assert scan() == first and len(opened) == 2  # from the cache: no layer read again
    entry = next((tmp_path / "cache").rglob(descs[0]["digest"].replace(":", "-")))
    for bad in (b"{", b"[]", json.dumps({**json.loads(entry.read_text()), "version": 0}).encode(),
                entry.read_bytes().replace(b'"deb"', b'7', 1)):
        entry.write_bytes(bad)
        assert scan() == first  # scanned again, same answer
        assert opened[-1] == descs[0]["digest"] and json.loads(entry.read_text())["version"] == 1  # rewritten
    assert ScanCache(None).get(descs[0]["digest"]) is None  # off: nothing cached


def test_build_host_caches_live_under_one_xdg_base(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Layer scans and downloaded wheels share the XDG cache base; the scan cache's switch wins."""
    monkeypatch.delenv("EDGEBUNDLE_SCAN_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_scan_cache() == tmp_path / "xdg" / "edgebundle" / "layerscan"
    assert default_wheel_cache() == tmp_path / "xdg" / "edgebundle" / "wheelhouse"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_wheel_cache() == tmp_path / "home" / ".cache" / "edgebundle" / "wheelhouse"
    monkeypatch.setenv("EDGEBUNDLE_SCAN_CACHE", "off")
    assert default_scan_cache() is None
