"""Helm charts as bundle inputs (docs/HELM.md): written here, locked, carried, rendered by Helm's engine.

The chart the tests write has a ``_helpers.tpl``, an unpacked subchart (``cache``, enabled by a
value), a packaged dependency (``metrics-0.2.0.tgz``), a ``values.schema.json`` and conditionals
driven by values (a GPU limit). Rendered objects are asserted field by field against values written
here, not computed with the product's functions.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import platform
import sys
import tarfile
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from bundler.build import Builder
from bundler.cli import main as bundle_main
from bundler.commands.common import registry_factory
from bundler.lint import lint
from bundler.lockfile import ensure_lock
from bundler.spec import load_spec
from edgebundle.errors import UsageError
from edgebundle.signing import load_private_key
from edgebundle.parts import open_source
from edgebundle.root import MalformedRootError, parse_root
from installer import helmrender
from installer.helmrender import chart_docs
from installer.plan import load_plan
from installer.render import RenderError, render
from installer.site import load_site
from tests.fixtures.bundles import BuiltBundle, BundleWorld, bundle_world  # noqa: F401
from tests.fixtures.kube import Cluster, control_plane, kube_cluster, kube_nodes  # noqa: F401
from tests.fixtures.registry import registry  # noqa: F401
from tests.fixtures.registry import RegistryProcess, free_port
from tests.test_bootstrap import WHEEL_CACHE
from tests.test_plan_apply import NS, RagBundles, World, install_bundle, write_site

pytestmark = pytest.mark.timeout(180)
helm_python = pytest.importorskip("helm_python", reason="the Helm engine: pip install 'edgebundle[helm]'")

HELPERS = '''{{- define "webui.fullname" -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- define "webui.labels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}
'''

DEPLOYMENT = '''apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ include "webui.fullname" . }}
  labels:
    {{- include "webui.labels" . | nindent 4 }}
  annotations:
    kube-version: {{ .Capabilities.KubeVersion.Version | quote }}
spec:
  replicas: {{ .Values.replicas }}
  selector:
    matchLabels: {app: {{ include "webui.fullname" . }}}
  template:
    metadata:
      labels: {app: {{ include "webui.fullname" . }}}
    spec:
      containers:
        - name: ui
          image: "{{ .Values.image.repository }}:{{ .Values.image.tag }}"
          env:
            - name: TITLE
              value: {{ .Values.title | upper | quote }}
          {{- if .Values.gpu.enabled }}
          resources:
            limits:
              nvidia.com/gpu: {{ .Values.gpu.count }}
          {{- end }}
'''

SCHEMA = {"type": "object", "required": ["replicas"],
          "properties": {"replicas": {"type": "integer", "minimum": 1}}}


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def write_chart(base: Path, image_repo: str, tag: str = "1.0") -> Path:
    """The test chart ``webui`` 0.3.0 with its subchart and packaged dependency."""
    chart = base / "webui"
    _write(chart / "Chart.yaml", yaml.safe_dump({
        "apiVersion": "v2", "name": "webui", "version": "0.3.0",
        "dependencies": [{"name": "cache", "version": "0.1.0", "condition": "cache.enabled"},
                         {"name": "metrics", "version": "0.2.0", "repository": "file://../metrics"}]}))
    _write(chart / "values.yaml", yaml.safe_dump({
        "replicas": 1, "title": "edge chat", "image": {"repository": image_repo, "tag": tag},
        "gpu": {"enabled": False, "count": 1}, "cache": {"enabled": True, "size": "64Mi"}}))
    _write(chart / "values.schema.json", json.dumps(SCHEMA))
    _write(chart / "templates" / "_helpers.tpl", HELPERS)
    _write(chart / "templates" / "deployment.yaml", DEPLOYMENT)
    _write(chart / "templates" / "NOTES.txt", "Open {{ .Release.Name }} in a browser.\n")
    sub = chart / "charts" / "cache"
    _write(sub / "Chart.yaml", "apiVersion: v2\nname: cache\nversion: 0.1.0\n")
    _write(sub / "values.yaml", "size: 32Mi\n")
    _write(sub / "templates" / "configmap.yaml",
           "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ .Release.Name }}-cache\n"
           "data:\n  size: {{ .Values.size | quote }}\n")
    # the packaged dependency, as `helm dependency build` leaves it in charts/ (a plain tar.gz)
    metrics = {"metrics/Chart.yaml": "apiVersion: v2\nname: metrics\nversion: 0.2.0\n",
               "metrics/templates/service.yaml":
                   "apiVersion: v1\nkind: Service\nmetadata:\n  name: {{ .Release.Name }}-metrics\n"
                   "spec:\n  ports:\n    - port: 9090\n  selector: {app: metrics}\n"}
    with gzip.open(chart / "charts" / "metrics-0.2.0.tgz", "wb") as gz, tarfile.open(fileobj=gz, mode="w") as tar:
        for name, text in metrics.items():
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, fileobj=io.BytesIO(data))
    return chart


def spec_with_chart(world: BundleWorld, tmp: Path, *, images: list[str], chart_values: dict[str, Any],
                    tag: str = "1.0", name: str = "helm-edge") -> Path:
    chart = write_chart(tmp, f"{world.source.host}/rag/chat-ui", tag)
    _write(tmp / "edge-values.yaml", yaml.safe_dump({"title": "plant chat"}))
    doc = {"apiVersion": "edgebundle/v1", "kind": "Bundle",
           "metadata": {"name": name, "version": "1.0.0", "compatible": "rag-edge/x86_64"},
           "spec": {"images": [{"ref": f"{world.source.host}/{i}"} for i in images],
                    "charts": [{"name": "web", "path": str(chart), "valuesFiles": ["edge-values.yaml"],
                                "values": chart_values}]}}
    path = tmp / "bundle.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def build(world: BundleWorld, spec_path: Path) -> BuiltBundle:
    key, pub = world.key("release")
    spec = load_spec(spec_path)
    registries = registry_factory(())
    lock = ensure_lock(spec, registries, locked=False)
    out = spec_path.parent / "bundle.tar"
    result = Builder(spec, lock, registries).build(out, [load_private_key(key)])
    return BuiltBundle(out, pub, key, result.root, spec_path)


@pytest.fixture(scope="module")
def helm_bundle(bundle_world: BundleWorld, tmp_path_factory: pytest.TempPathFactory) -> BuiltBundle:
    tmp = tmp_path_factory.mktemp("helm-bundle")
    return build(bundle_world, spec_with_chart(bundle_world, tmp, images=["rag/chat-ui:1.0"],
                                               chart_values={"replicas": 1}))


def _site(tmp: Path, bundle: BuiltBundle, values: dict[str, Any] | None = None) -> Path:
    doc = {"apiVersion": "edgebundle/v1", "kind": "Site", "metadata": {"name": "plant-9"},
           "spec": {"compatible": "rag-edge/x86_64", "trust": {"keys": [str(bundle.pub)]},
                    "registry": {"address": "site-registry:5000"}, "models": {"root": str(tmp / "nas")},
                    "stateDir": str(tmp / "state"), "cluster": {"namespace": "edge-apps"}}}
    if values is not None:
        doc["spec"]["values"] = values
    path = tmp / "site.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def _rendered(tmp: Path, bundle: BuiltBundle, values: dict[str, Any] | None, kube: str | None = "v1.20.2") -> dict[str, Any]:
    site = load_site(_site(tmp, bundle, values))
    source = open_source(bundle.path)
    docs = chart_docs(source, bundle.root, site, kube)
    out = render(bundle.root, bundle.root_digest, docs, site)
    return {f"{o['kind']}/{o['metadata'].get('namespace', '')}/{o['metadata']['name']}": o for o in out.objects}


# --- the artifact in the bundle -----------------------------------------------------------------

def test_chart_travels_as_a_helm_oci_artifact(helm_bundle: BuiltBundle, tmp_path: Path) -> None:
    with tarfile.open(helm_bundle.path) as tar:
        members = {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}  # type: ignore[union-attr]
    index = json.loads(members["index.json"])
    [desc] = [d for d in index["manifests"]
              if d.get("annotations", {}).get("org.opencontainers.image.ref.name") == "charts/webui:0.3.0"]
    manifest = json.loads(members[f"blobs/sha256/{desc['digest'].split(':')[1]}"])
    assert manifest["config"]["mediaType"] == "application/vnd.cncf.helm.config.v1+json"
    [layer] = manifest["layers"]
    assert layer["mediaType"] == "application/vnd.cncf.helm.chart.content.v1.tar+gzip"
    config = json.loads(members[f"blobs/sha256/{manifest['config']['digest'].split(':')[1]}"])
    assert (config["name"], config["version"]) == ("webui", "0.3.0")
    archive = members[f"blobs/sha256/{layer['digest'].split(':')[1]}"]
    assert "sha256:" + hashlib.sha256(archive).hexdigest() == layer["digest"]
    with tarfile.open(fileobj=io.BytesIO(archive)) as chart:
        names = set(chart.getnames())
    assert {"webui/Chart.yaml", "webui/values.schema.json", "webui/templates/_helpers.tpl",
            "webui/charts/cache/templates/configmap.yaml", "webui/charts/metrics/templates/service.yaml"} <= names
    [entry] = helm_bundle.root.charts or []
    assert (entry.release, entry.chart, entry.version, entry.archive) == ("web", "webui", "0.3.0", layer["digest"])
    values = json.loads(members[f"blobs/sha256/{entry.values.split(':')[1]}"])
    assert values == {"title": "plant chat", "replicas": 1}  # the values file, then inline values
    lock = json.loads((helm_bundle.spec_path.parent / "bundles.lock").read_text())
    assert lock["charts"][0]["digest"] == layer["digest"]
    assert lock["charts"][0]["dependencies"] == [{"name": "cache", "version": "0.1.0"},
                                                 {"name": "metrics", "version": "0.2.0"}]
    sbom = json.loads(members["edgebundle/sbom.cdx.json"])  # the chart is in the signed SBOM, by its archive
    [comp] = [c for c in sbom["components"] if c["bom-ref"] == "chart:web"]
    assert (comp["type"], comp["name"], comp["version"]) == ("application", "webui", "0.3.0")
    assert comp["hashes"] == [{"alg": "SHA-256", "content": hashlib.sha256(archive).hexdigest()}]


def test_lock_is_reproducible_and_notices_a_changed_chart(bundle_world: BundleWorld, tmp_path: Path) -> None:
    spec_path = spec_with_chart(bundle_world, tmp_path, images=["rag/chat-ui:1.0"], chart_values={})
    runner = CliRunner()
    first = runner.invoke(bundle_main, ["lock", str(spec_path), "--json"])
    assert first.exit_code == 0, first.output
    for _ in range(6):  # Helm packs subcharts in Go map order: each lock must still pin the same bytes
        again = runner.invoke(bundle_main, ["lock", str(spec_path), "--json"])
        assert json.loads(again.output)["charts"] == json.loads(first.output)["charts"]
    (tmp_path / "webui" / "charts" / "cache" / "values.yaml").write_text("size: 16Mi\n")
    res = runner.invoke(bundle_main, ["create", str(spec_path), "-o", str(tmp_path / "b.tar"),
                                      "--key", str(bundle_world.key("release")[0]), "--locked"])
    assert res.exit_code != 0 and "chart web" in res.output and "changed since the lock" in res.output


# --- rendering at the site ----------------------------------------------------------------------

def test_site_values_overlay_bundle_values_field_by_field(helm_bundle: BuiltBundle, tmp_path: Path) -> None:
    chat = next(i for i in helm_bundle.root.images if i.repository == "rag/chat-ui")
    objs = _rendered(tmp_path, helm_bundle, None)
    assert sorted(objs) == ["ConfigMap/edge-apps/web-cache", "Deployment/edge-apps/web-webui",
                            "Service/edge-apps/web-metrics"]  # NOTES.txt is not an object
    dep = objs["Deployment/edge-apps/web-webui"]
    assert dep["spec"]["replicas"] == 1
    assert dep["metadata"]["annotations"]["kube-version"] == "v1.20.2"
    assert dep["metadata"]["labels"]["app.kubernetes.io/instance"] == "web"
    assert dep["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "edgebundle"
    [c] = dep["spec"]["template"]["spec"]["containers"]
    assert c["image"] == f"site-registry:5000/rag/chat-ui@{chat.digest}"
    assert c["env"] == [{"name": "TITLE", "value": "PLANT CHAT"}]
    assert "resources" not in c
    assert objs["ConfigMap/edge-apps/web-cache"]["data"] == {"size": "64Mi"}  # the parent overrides the subchart

    objs = _rendered(tmp_path, helm_bundle, {"web": {"replicas": 3, "gpu": {"enabled": True, "count": 2},
                                                     "cache": {"enabled": False}, "title": None}})
    assert sorted(objs) == ["Deployment/edge-apps/web-webui", "Service/edge-apps/web-metrics"]
    dep = objs["Deployment/edge-apps/web-webui"]
    assert dep["spec"]["replicas"] == 3
    [c] = dep["spec"]["template"]["spec"]["containers"]
    assert c["resources"] == {"limits": {"nvidia.com/gpu": 2}}
    assert c["env"] == [{"name": "TITLE", "value": "EDGE CHAT"}]  # null removes the bundle value: chart default


def test_schema_refuses_site_values(helm_bundle: BuiltBundle, tmp_path: Path) -> None:
    with pytest.raises(RenderError) as e:
        _rendered(tmp_path, helm_bundle, {"web": {"replicas": 0}})
    assert "chart release web" in e.value.message and "/replicas" in e.value.message and "minimum" in e.value.message


def test_site_values_for_an_unknown_release_are_refused(helm_bundle: BuiltBundle, tmp_path: Path) -> None:
    with pytest.raises(RenderError) as e:
        _rendered(tmp_path, helm_bundle, {"wbe": {"replicas": 2}})
    assert "wbe" in e.value.message and "web" in (e.value.hint or "")


def test_spec_refuses_a_typo_in_a_chart_entry(bundle_world: BundleWorld, tmp_path: Path) -> None:
    spec_path = spec_with_chart(bundle_world, tmp_path, images=[], chart_values={})
    doc = yaml.safe_load(spec_path.read_text())
    doc["spec"]["charts"][0]["valus"] = {"replicas": 2}
    spec_path.write_text(yaml.safe_dump(doc))
    with pytest.raises(UsageError) as e:
        load_spec(spec_path)
    assert "valus" in e.value.message


def test_an_installer_without_the_engine_says_how_to_get_it(helm_bundle: BuiltBundle, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(helmrender, "ENGINE_MODULE", "helm_python_not_installed")
    helmrender.engine.cache_clear()
    try:
        with pytest.raises(helmrender.EngineMissing) as e:
            _rendered(tmp_path, helm_bundle, None)
    finally:
        helmrender.engine.cache_clear()
    assert "edgebundle[helm]" in (e.value.hint or "")


def test_root_refuses_chart_entries_it_cannot_trust(helm_bundle: BuiltBundle) -> None:
    doc = json.loads(helm_bundle.root.to_bytes())
    for edit, needle in ((lambda c: c.update(values="sha256:" + "1" * 64), "does not pin"),
                         (lambda c: c.update(release="Web_1"), "not a Helm release name"),
                         (lambda c: c.update(namespace="../x"), "not a namespace name"),
                         (lambda c: c.update(extra=1), "unknown keys")):
        bad = json.loads(json.dumps(doc))
        edit(bad["charts"][0])
        with pytest.raises(MalformedRootError) as e:
            parse_root(json.dumps(bad).encode())
        assert needle in e.value.message
    twice = json.loads(json.dumps(doc))
    twice["charts"].append(twice["charts"][0])
    with pytest.raises(MalformedRootError, match="a second time"):
        parse_root(json.dumps(twice).encode())


def test_a_chart_from_an_oci_registry_is_pinned_and_carried(bundle_world: BundleWorld, registry: Any,
                                                            tmp_path: Path) -> None:
    chart = write_chart(tmp_path / "src", f"{bundle_world.source.host}/rag/chat-ui")
    pushed = Path(helm_python.package(chart, destination=str(tmp_path / "dist")))
    with helm_python.RegistryClient(plain_http=True) as client:
        client.push(pushed, f"oci://{registry.host}/charts")
    spec_path = spec_with_chart(bundle_world, tmp_path, images=["rag/chat-ui:1.0"], chart_values={})
    doc = yaml.safe_load(spec_path.read_text())
    doc["spec"]["charts"][0].update(path=f"oci://{registry.host}/charts/webui")
    spec_path.write_text(yaml.safe_dump(doc))
    with pytest.raises(UsageError, match="needs the chart's version"):
        load_spec(spec_path)
    doc["spec"]["charts"][0]["version"] = "0.3.0"
    spec_path.write_text(yaml.safe_dump(doc))
    built = build(bundle_world, spec_path)
    [entry] = built.root.charts or []
    assert entry.archive == "sha256:" + hashlib.sha256(pushed.read_bytes()).hexdigest()  # the very bytes pushed
    objs = _rendered(tmp_path, built, {"web": {"replicas": 4}})
    assert objs["Deployment/edge-apps/web-webui"]["spec"]["replicas"] == 4


# --- the build-time proof -----------------------------------------------------------------------

def test_lint_refuses_a_chart_image_the_spec_does_not_carry(bundle_world: BundleWorld, tmp_path: Path) -> None:
    spec_path = spec_with_chart(bundle_world, tmp_path, images=["rag/vector-db:1.0"], chart_values={})
    report = lint(load_spec(spec_path), None)
    [finding] = report.findings
    assert finding.file == "chart web: webui/templates/deployment.yaml"
    assert f"{bundle_world.source.host}/rag/chat-ui:1.0" in finding.problem
    res = CliRunner().invoke(bundle_main, ["lock", str(spec_path), "--discover-images"])
    assert res.exit_code == 0, res.output
    assert res.output.splitlines() == ["chart web:", f"  {bundle_world.source.host}/rag/chat-ui:1.0"]


def test_a_credential_a_chart_would_render_is_refused_unless_allowed(bundle_world: BundleWorld, tmp_path: Path) -> None:
    """Secrets stay home for charts too: what the chart renders with the bundle's values, and its
    values files, are scanned like manifests."""
    spec_path = spec_with_chart(bundle_world, tmp_path, images=["rag/chat-ui:1.0"],
                                chart_values={"db": {"password": "hunter2-plant-9"}})
    _write(tmp_path / "webui" / "templates" / "secret.yaml",
           "{{- if .Values.db }}\napiVersion: v1\nkind: Secret\nmetadata:\n  name: {{ .Release.Name }}-db\n"
           "stringData:\n  password: {{ .Values.db.password | quote }}\n{{- end }}\n")
    _write(tmp_path / "edge-values.yaml", yaml.safe_dump({"title": "plant chat", "apiKey": "AKIAIOSFODNN7EXAMPLE"}))
    findings = {(f.file, f.problem.split(", value sha1")[0]) for f in lint(load_spec(spec_path), None).findings}
    assert findings == {("chart web: webui/templates/secret.yaml:0", "plaintext credential (Kubernetes Secret stringData"),
                        ("chart web/edge-values.yaml:1", "plaintext credential (AWS Access Key"),
                        ("chart web/edge-values.yaml:1", "plaintext credential (Secret Keyword")}, findings
    doc = yaml.safe_load(spec_path.read_text())
    doc["spec"]["secrets"] = {"allow": [
        {"file": "chart web: webui/templates/secret.yaml", "detector": "Kubernetes Secret stringData",
         "reason": "a throwaway password of the plant-9 test rig"},
        {"file": "chart web/edge-values.yaml", "detector": "AWS Access Key", "reason": "AWS's documented example key"},
        {"file": "chart web/edge-values.yaml", "detector": "Secret Keyword", "reason": "the same example key"}]}
    spec_path.write_text(yaml.safe_dump(doc))
    assert lint(load_spec(spec_path), None).findings == []


def test_lint_reports_a_schema_refusal_of_the_bundle_values(bundle_world: BundleWorld, tmp_path: Path) -> None:
    spec_path = spec_with_chart(bundle_world, tmp_path, images=["rag/chat-ui:1.0"], chart_values={"replicas": "two"})
    [finding] = lint(load_spec(spec_path), None).findings
    assert finding.file == "chart web" and "/replicas" in finding.problem


def test_missing_dependency_is_refused_at_lock(bundle_world: BundleWorld, tmp_path: Path) -> None:
    spec_path = spec_with_chart(bundle_world, tmp_path, images=["rag/chat-ui:1.0"], chart_values={})
    (tmp_path / "webui" / "charts" / "metrics-0.2.0.tgz").unlink()
    res = CliRunner().invoke(bundle_main, ["lock", str(spec_path)])
    assert res.exit_code == 2 and "metrics 0.2.0" in res.output and "helm dependency build" in res.output


# --- the offline installer -----------------------------------------------------------------------

def test_media_carry_the_helm_engine_for_a_bundle_with_charts(helm_bundle: BuiltBundle, tmp_path: Path) -> None:
    machine = platform.machine()
    if machine not in ("x86_64", "aarch64"):
        pytest.skip(f"no manylinux wheels for {machine}")
    usb = tmp_path / "usb"
    usb.mkdir()
    py = "%d.%d" % sys.version_info[:2]
    res = CliRunner().invoke(bundle_main, ["write-media", str(helm_bundle.path), str(usb), "--json",
                                           "--target-platform", f"manylinux2014_{machine}", "--python-version", py,
                                           "--wheel-cache", str(WHEEL_CACHE)], env={"PIP_NO_INDEX": "1"})
    assert res.exit_code == 0, f"(is the helm wheel cached? run: make test's wheel step)\n{res.output}"
    names = sorted(p.name for p in (usb / "wheelhouse").iterdir())
    assert f"helm_python_sdk-0.2.2-py3-none-manylinux_2_28_{machine}.whl" in names
    assert '"edgebundle[helm]==$VERSION"' in (usb / "bootstrap.sh").read_text()
    readme = (usb / "README.txt").read_text()
    assert "installer plan" in readme and "installer apply" in readme  # a charts-only bundle is planned


# --- plan and apply on a real cluster -----------------------------------------------------------

@pytest.fixture(scope="module")
def helm_site_registry(tmp_path_factory: pytest.TempPathFactory) -> Any:
    reg = RegistryProcess(tmp_path_factory.mktemp("helm-site-registry"), free_port())
    reg.start()
    try:
        yield reg
    finally:
        reg.stop()


def _namespace(kube: Cluster) -> None:
    """The release namespace, made by the operator (as `helm install` without --create-namespace wants)."""
    kube.resource("v1", "Namespace").create(body={"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}})


def test_upgrade_that_changes_only_a_site_value_plans_only_that_change(
        helm_bundle: BuiltBundle, helm_site_registry: RegistryProcess, kube_cluster: Cluster,
        tmp_path: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    _namespace(kube_cluster)
    rag = RagBundles(helm_bundle, helm_bundle, helm_site_registry, tmp_path_factory.mktemp("nas"))
    site = write_site(tmp_path, rag, values={"web": {"cache": {"enabled": False}}})
    install_bundle(site, helm_bundle)
    w = World(tmp_path, site, kube_cluster, rag)
    res, plan = w.plan(helm_bundle)
    assert res.exit_code == 3, res.output
    assert w.approve(plan).exit_code == 0
    res = w.apply(plan)
    assert res.exit_code == 0, res.output
    dep = kube_cluster.get("Deployment", NS, "web-webui")
    assert dep is not None and dep["spec"]["replicas"] == 1
    assert dep["metadata"]["annotations"]["kube-version"] == "v1.20.2"  # the cluster's own version
    assert kube_cluster.get("ConfigMap", NS, "web-cache") is None  # the site disabled the subchart

    doc = yaml.safe_load(site.read_text())
    doc["spec"]["values"]["web"]["replicas"] = 2
    site.write_text(yaml.safe_dump(doc))
    res, plan = w.plan(helm_bundle, "v2.json", "--json")
    assert res.exit_code == 3, res.output
    changed = {o["id"]: o for o in json.loads(res.output)["objects"] if o["action"] != "unchanged"}
    assert list(changed) == [f"apps|Deployment|{NS}|web-webui"]
    assert [c["path"] for c in changed[f"apps|Deployment|{NS}|web-webui"]["changes"]] == ["spec.replicas"]
    assert load_plan(plan).summary()["unchanged"] == 1  # the metrics Service
    assert w.approve(plan).exit_code == 0
    assert w.apply(plan).exit_code == 0
    assert kube_cluster.get("Deployment", NS, "web-webui")["spec"]["replicas"] == 2  # type: ignore[index]


def test_objects_of_a_helm_install_are_refused_unless_adopted(
        helm_bundle: BuiltBundle, helm_site_registry: RegistryProcess, kube_cluster: Cluster,
        tmp_path: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    rag = RagBundles(helm_bundle, helm_bundle, helm_site_registry, tmp_path_factory.mktemp("nas"))
    site = write_site(tmp_path, rag)
    install_bundle(site, helm_bundle)
    _namespace(kube_cluster)
    kube_cluster.resource("v1", "ConfigMap").create(namespace=NS, body={"apiVersion": "v1", "kind": "ConfigMap",
                        "metadata": {"name": "web-cache", "namespace": NS,
                                     "labels": {"app.kubernetes.io/managed-by": "Helm"},
                                     "annotations": {"meta.helm.sh/release-name": "web",
                                                     "meta.helm.sh/release-namespace": NS}},
                        "data": {"size": "1Gi"}})
    w = World(tmp_path, site, kube_cluster, rag)
    res, _ = w.plan(helm_bundle)
    assert res.exit_code == 1, res.output
    assert f"ConfigMap/{NS}/web-cache (release web)" in res.output and "--adopt-helm" in res.output
    res, plan = w.plan(helm_bundle, "adopt.json", "--adopt-helm", "--json")
    assert res.exit_code == 3, res.output
    out = json.loads(res.output)
    entry = next(o for o in out["objects"] if o["id"] == f"|ConfigMap|{NS}|web-cache")
    assert entry["action"] == "update"
    assert any("adopted from helm release web" in n for n in out["notes"])
