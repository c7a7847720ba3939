"""The bundle's SBOM: one CycloneDX 1.6 JSON document, written by ``bundle create`` as the signed
member ``edgebundle/sbom.cdx.json`` (edgebundle/layout.py), so that a site can answer "what exactly
runs here?" and feed its scanner (Trivy, Grype) offline.

Components:
- one ``container`` per image and platform (its per-platform manifest digest as hash and purl),
  with the packages its layers install (bundler/layerscan.py, whiteouts honoured), each a
  ``library`` with a purl (``pkg:deb/...``, ``pkg:apk/...``, ``pkg:pypi/...``) that the image's
  entry in ``dependencies`` lists;
- one ``machine-learning-model`` per model with a ``modelCard`` (format, architecture,
  quantization, parameter count, context length; licence as the component's licence) from the
  GGUF header or ``config.json`` (bundler/modelpack.py), its files as nested ``file`` components;
- one ``file`` per Kubernetes manifest;
- one ``application`` per Helm chart release, hashed with its packaged chart's digest, its
  artifact manifest and default values' digests as properties.

Invariants:
- Every hash is the digest the signed root pins for the same thing (manifest digest, file digest).
- Reproducible: bom-refs, the serial number and the timestamp derive from the content and the
  lock, and the bytes are canonical JSON, so the same inputs give the same SBOM.
- The document validates against the CycloneDX 1.6 JSON schema before it is written (the
  builder refuses otherwise: a bug, never a site's surprise).
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Callable
from contextlib import AbstractContextManager
from datetime import datetime, timezone
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as dist_version
from typing import Any, BinaryIO

from cyclonedx.model import HashAlgorithm, HashType, Property
from cyclonedx.model.bom import Bom, BomMetaData
from cyclonedx.model.component import Component, ComponentType
from cyclonedx.model.license import DisjunctiveLicense
from cyclonedx.output.json import JsonV1Dot6
from cyclonedx.schema import SchemaVersion
from cyclonedx.validation.json import JsonStrictValidator
from packageurl import PackageURL

from bundler.layerscan import LayerScan, Package, ScanCache, default_scan_cache, merge_layers, scan_layer
from bundler.lockfile import platform_of
from bundler.modelpack import ModelDescription, describe_model
from bundler.spec import BundleSpec
from edgebundle import layout
from edgebundle import mediatypes as mt
from edgebundle.errors import EdgebundleError
from edgebundle.registry import parse_reference
from edgebundle.root import (
    ChartEntry,
    ImageEntry,
    ManifestsEntry,
    ModelEntry,
    canonical_json,
    load_json_bounded,
    parse_time,
)

#: CycloneDX property names of our own facts (the taxonomy's namespace for tools is free-form).
PROP = "edgebundle:"
#: The purl namespace of a package kind when the image has no os-release.
DEFAULT_NAMESPACE = {"deb": "debian", "apk": "alpine"}
#: The CycloneDX ``task`` of a model kind.
MODEL_TASK = {"llm": "text-generation", "embedding": "feature-extraction"}

#: (image, layer digest, size) -> a readable stream of the layer blob as stored.
OpenLayer = Callable[[ImageEntry, str, int], AbstractContextManager[BinaryIO]]


class SbomError(EdgebundleError):
    """The SBOM could not be written (an edgebundle bug when the schema refuses it)."""


def _sha256(digest: str) -> HashType:
    return HashType(alg=HashAlgorithm.SHA_256, content=digest.split(":", 1)[1])


def _props(**facts: Any) -> list[Property]:
    return [Property(name=PROP + k, value=str(v)) for k, v in facts.items() if v is not None]


def _pypi_name(name: str) -> str:
    """PEP 503 normalised, as ``pkg:pypi`` purls spell names."""
    return re.sub(r"[-_.]+", "-", name).lower()


def package_purl(p: Package, os_release: dict[str, str]) -> PackageURL:
    """The purl of an installed package; deb/apk name their distribution from ``os-release``."""
    if p.kind == "pypi":
        return PackageURL(type="pypi", name=_pypi_name(p.name), version=p.version)
    distro_id = os_release.get("ID", "").lower()
    namespace = distro_id if re.fullmatch(r"[a-z0-9._-]+", distro_id) else DEFAULT_NAMESPACE[p.kind]
    qualifiers = {"arch": p.arch} if p.arch else {}
    if distro_id and os_release.get("VERSION_ID"):
        qualifiers["distro"] = f"{distro_id}-{os_release['VERSION_ID']}"
    return PackageURL(type=p.kind, namespace=namespace, name=p.name, version=p.version,
                      qualifiers=qualifiers or None)


# --- images ---------------------------------------------------------------------------------------

def image_platforms(image: ImageEntry, read_small: Callable[[str], bytes]) -> list[tuple[str, str, dict[str, Any]]]:
    """(platform, manifest digest, manifest) of each platform the bundle carries for ``image``."""
    top = load_json_bounded(read_small(image.digest), f"manifest of {image.ref}")
    if not mt.is_index(image.mediaType):
        return [(image.platforms[0] if image.platforms else "unknown", image.digest, top)]
    out = []
    for child in top.get("manifests", []):
        plat = platform_of(child)
        if plat and plat != "unknown/unknown":  # attestation manifests are not platforms
            out.append((plat, child["digest"],
                        load_json_bounded(read_small(child["digest"]), f"manifest of {image.ref} {plat}")))
    return out


def _is_tar_layer(desc: dict[str, Any]) -> bool:
    media = str(desc.get("mediaType", ""))
    return ".tar" in media or "rootfs.diff" in media


def scan_image(image: ImageEntry, plat: str, manifest: dict[str, Any], open_layer: OpenLayer,
               cache: dict[str, LayerScan], disk: ScanCache | None = None) -> Any:
    """The merged packages of one platform of ``image`` (layers shared by images are read once, and
    a layer this host scanned before is not read again: ``disk``)."""
    scans = []
    for desc in manifest.get("layers", []):
        if not _is_tar_layer(desc):
            continue
        digest, size = desc["digest"], int(desc["size"])
        if digest not in cache:
            found = disk.get(digest) if disk else None
            if found is None:
                with open_layer(image, digest, size) as raw:
                    found = scan_layer(raw, f"image {image.ref} ({plat}) layer {digest[:19]}")
                if disk:
                    disk.put(digest, found)
            cache[digest] = found
        scans.append(cache[digest])
    return merge_layers(scans, f"image {image.ref} ({plat})")


def _image_components(image: ImageEntry, plat: str, digest: str, found: Any) -> tuple[Component, list[Component]]:
    ref = parse_reference(image.ref)
    os_, arch, *variant = (plat.split("/") + ["", ""])[:3] if "/" in plat else ("", "", "")
    qualifiers = {"repository_url": f"{ref.registry}/{image.repository}", "arch": arch or None,
                  "os": os_ or None, "variant": variant[0] if variant and variant[0] else None,
                  "tag": image.tag}
    bom_ref = f"image:{image.refName}|{plat}"
    container = Component(
        type=ComponentType.CONTAINER, name=image.repository, version=image.tag or digest,
        bom_ref=bom_ref, hashes=[_sha256(digest)],
        purl=PackageURL(type="oci", name=image.repository.rsplit("/", 1)[-1], version=digest,
                        qualifiers={k: v for k, v in qualifiers.items() if v}),
        properties=_props(ref=image.ref, platform=plat, **{"bundle-digest": image.digest,
                                                            "os-release": found.os_release.get("PRETTY_NAME")}))
    packages = []
    for p in found.packages:
        purl = package_purl(p, found.os_release)
        lic = [DisjunctiveLicense(name=p.license)] if p.license else None
        packages.append(Component(type=ComponentType.LIBRARY, name=p.name, version=p.version, purl=purl,
                                  bom_ref=f"{bom_ref}|{purl.to_string()}|{p.path}", licenses=lic,
                                  properties=_props(**{"found-in": p.path, "source-package": p.origin})))
    return container, packages


# --- models and manifests -------------------------------------------------------------------------

def _model_component(m: ModelEntry, desc: ModelDescription) -> tuple[Component, dict[str, Any]]:
    """The model's component and its ``modelCard`` (which the library does not model yet)."""
    bom_ref = f"model:{m.kind}/{m.name}@{m.version}"
    files = [Component(type=ComponentType.FILE, name=f.path, bom_ref=f"{bom_ref}|{f.path}",
                       hashes=[_sha256(f.digest)], properties=_props(size=f.size))
             for f in m.files]
    comp = Component(
        type=ComponentType.MACHINE_LEARNING_MODEL, name=m.name, version=m.version, bom_ref=bom_ref,
        hashes=[_sha256(m.manifest)], components=files,
        licenses=[DisjunctiveLicense(name=lic) for lic in desc.licenses] or None,
        properties=_props(kind=m.kind, format=m.format, **{"artifact-manifest": m.manifest}))
    facts = {"format": desc.format, "quantization": desc.quantization, "parameterCount": desc.param_count,
             "contextLength": desc.context_length, "precision": desc.precision, "sizeLabel": desc.size_label,
             "embeddingLength": desc.embedding_length, "blockCount": desc.block_count,
             "license": ", ".join(desc.licenses) or None}
    params: dict[str, Any] = {k: v for k, v in (("task", MODEL_TASK.get(m.kind)),
                                                ("architectureFamily", desc.family),
                                                ("modelArchitecture", desc.architecture)) if v}
    card = {"bom-ref": f"{bom_ref}|card", "modelParameters": params,
            "properties": [{"name": k, "value": str(v)} for k, v in facts.items() if v is not None]}
    return comp, card


def _manifest_components(manifests: ManifestsEntry | None) -> list[Component]:
    return [Component(type=ComponentType.FILE, name=f.path, bom_ref=f"manifest:{f.path}", hashes=[_sha256(f.digest)],
                      properties=_props(size=f.size))
            for f in (manifests.files if manifests else [])]


def _chart_components(charts: list[ChartEntry]) -> list[Component]:
    return [Component(type=ComponentType.APPLICATION, name=c.chart, version=c.version, bom_ref=f"chart:{c.release}",
                      hashes=[_sha256(c.archive)], properties=_props(
                          **{"helm-release": c.release, "namespace": c.namespace, "artifact-manifest": c.manifest,
                             "default-values": c.values}))
            for c in charts]


# --- the document ---------------------------------------------------------------------------------

def sbom_document(spec: BundleSpec, created: str, images: list[ImageEntry], models: list[ModelEntry],
                  manifests: ManifestsEntry | None, read_small: Callable[[str], bytes], open_layer: OpenLayer,
                  log: Callable[[str], None] = lambda s: None, charts: list[ChartEntry] | None = None) -> bytes:
    """The SBOM's canonical JSON bytes for a bundle with these root entries.

    ``read_small(digest)`` returns a stored manifest; ``open_layer`` streams a layer blob."""
    bom = Bom()
    bom.metadata = BomMetaData(
        timestamp=datetime.fromtimestamp(parse_time(created, "the lock's created"), timezone.utc),
        component=Component(type=ComponentType.APPLICATION, name=spec.name, version=spec.version,
                            bom_ref="bundle", properties=_props(compatible=spec.compatible)))
    bom.metadata.tools.components.add(Component(type=ComponentType.APPLICATION, name="edgebundle",
                                                version=_edgebundle_version(), bom_ref="tool:edgebundle"))
    cache: dict[str, LayerScan] = {}
    disk = ScanCache(default_scan_cache())
    for image in images:
        for plat, digest, manifest in image_platforms(image, read_small):
            found = scan_image(image, plat, manifest, open_layer, cache, disk)
            container, packages = _image_components(image, plat, digest, found)
            log(f"sbom: {image.ref} {plat}: {len(packages)} packages")
            bom.components.add(container)
            bom.components.update(packages)
            bom.register_dependency(container, packages)
    paths = {(m.name, m.version): m.path for m in spec.models}
    cards = {}
    for m in models:
        comp, cards[f"model:{m.kind}/{m.name}@{m.version}"] = _model_component(
            m, describe_model(m.name, m.kind, m.version, paths[(m.name, m.version)]))
        bom.components.add(comp)
    bom.components.update(_manifest_components(manifests))
    bom.components.update(_chart_components(charts or []))
    bom.register_dependency(bom.metadata.component, [c for c in bom.components if c.type != ComponentType.LIBRARY])
    bom.serial_number = uuid.uuid5(uuid.NAMESPACE_URL, "edgebundle-sbom:" + json.dumps(
        [spec.name, spec.version, created, [i.digest for i in images], [m.manifest for m in models],
         manifests.manifest if manifests else None, [c.archive for c in charts or []]]))
    doc = json.loads(JsonV1Dot6(bom).output_as_string())
    for comp_doc in doc.get("components", []):
        if comp_doc.get("bom-ref") in cards:
            comp_doc["modelCard"] = cards[comp_doc["bom-ref"]]
    data = canonical_json(doc)
    problem = JsonStrictValidator(SchemaVersion.V1_6).validate_str(data.decode())
    if problem is not None:
        raise SbomError(f"the SBOM does not validate against CycloneDX 1.6: {str(problem)[:300]}",
                        hint="this is an edgebundle bug; please report it with the spec")
    if len(data) > layout.MAX_JSON_BYTES:
        raise SbomError(f"the SBOM is {len(data)} bytes, over the {layout.MAX_JSON_BYTES}-byte bound of a "
                        "bundle document", hint="split the bundle: fewer images per bundle")
    return data


def _edgebundle_version() -> str:
    try:
        return dist_version("edgebundle")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown"


def sbom_summary(doc: dict[str, Any]) -> dict[str, int]:
    """Component counts of an SBOM document, by what they stand for (for ``make demo`` and inspect)."""
    comps = doc.get("components") or []
    types = [c.get("type") for c in comps if isinstance(c, dict)]
    return {"images": types.count("container"), "packages": types.count("library"),
            "models": types.count("machine-learning-model"),
            "manifests": _refs(comps, "manifest:"), "charts": _refs(comps, "chart:")}


def _refs(comps: list[Any], prefix: str) -> int:
    return sum(1 for c in comps if isinstance(c, dict) and str(c.get("bom-ref", "")).startswith(prefix))
