"""A bundle proven deployable on the build host: bundle lint, and bundle create refusing first.

The shipped manifests/ with a spec carrying their five images and two models lint clean; each
test breaks one thing the site (or its cluster) would refuse and asserts the refusal names the
file, the object and the fix, and that nothing was written.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner, Result

from bundler.cli import main as bundle_main
from edgebundle.signing import generate_keypair

REPO = Path(__file__).resolve().parents[1]
IMAGES = ["llm-service", "vector-db", "orchestrator", "chat-ui", "data-connector"]


def bundle(*args: Any) -> Result:
    return CliRunner().invoke(bundle_main, [str(a) for a in args])


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A spec beside a copy of the shipped manifests; model files are small stand-ins."""
    shutil.copytree(REPO / "manifests", tmp_path / "manifests")
    (tmp_path / "models" / "minilm").mkdir(parents=True)
    (tmp_path / "models" / "llm.gguf").write_bytes(b"GGUF" + b"\0" * 60)
    (tmp_path / "models" / "minilm" / "config.json").write_text("{}")
    spec = {"apiVersion": "edgebundle/v1", "kind": "Bundle",
            "metadata": {"name": "rag-edge", "version": "1.0.0", "compatible": "rag-edge/x86_64"},
            "spec": {"images": [{"ref": f"127.0.0.1:5000/rag/{i}:1.0"} for i in IMAGES],
                     "models": [{"name": "smollm2-135m", "kind": "llm", "version": "v1.0", "path": "models/llm.gguf"},
                                {"name": "all-minilm-l6-v2", "kind": "embedding", "version": "v1.0",
                                 "path": "models/minilm"}],
                     "manifests": ["manifests/"]}}
    (tmp_path / "bundle.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    return tmp_path


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, f"{old!r} not in {path}"
    path.write_text(text.replace(old, new, 1))


def set_kubernetes(project: Path, declared: str) -> None:
    doc = yaml.safe_load((project / "bundle.yaml").read_text())
    doc["metadata"]["kubernetes"] = declared
    (project / "bundle.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))


def refused(project: Path, *needles: str) -> str:
    r = bundle("lint", project / "bundle.yaml")
    assert r.exit_code == 2, r.output
    for n in needles:
        assert n in r.output, f"{n!r} not in:\n{r.output}"
    return r.output


def test_shipped_manifests_lint_clean_for_every_declared_version(project: Path) -> None:
    set_kubernetes(project, ">=1.25")
    r = bundle("lint", project / "bundle.yaml")
    assert r.exit_code == 0, r.output
    assert "ok: 14 object(s) in 7 file(s)" in r.output and "Kubernetes 1.25 to" in r.output


def test_image_the_spec_does_not_carry(project: Path) -> None:
    edit(project / "manifests/20-llm-service.yaml", "rag/llm-service:1.0", "rag/llm-service:0.9")
    refused(project, "20-llm-service.yaml: unapproved image: Deployment/rag-system/llm-service container "
            "'llm-server' uses image '127.0.0.1:5000/rag/llm-service:0.9', which bundle rag-edge 1.0.0 does "
            "not carry", "fix: add the image to the bundle spec")


def test_init_container_image_in_a_cronjob(project: Path) -> None:
    edit(project / "manifests/60-data-connector.yaml", "          containers:\n",
         "          initContainers:\n            - name: wait\n              image: busybox:1.36\n"
         "          containers:\n")
    refused(project, "60-data-connector.yaml: unapproved image: CronJob/rag-system/data-connector "
            "initContainer 'wait' uses image 'busybox:1.36'")


def test_model_in_the_annotation_that_the_bundle_does_not_stage(project: Path) -> None:
    edit(project / "manifests/40-orchestrator.yaml", "edgebundle.dev/models: ",
         "edgebundle.dev/models: bge-small,")
    refused(project, "40-orchestrator.yaml: Deployment/rag-system/orchestrator", "loads model 'bge-small'",
            "fix: bundle carries: all-minilm-l6-v2, smollm2-135m")


def test_models_path_of_a_version_the_bundle_does_not_stage(project: Path) -> None:
    edit(project / "manifests/20-llm-service.yaml", "    edgebundle.dev/models: smollm2-135m\n", "")
    edit(project / "manifests/20-llm-service.yaml", "/models/llm/smollm2-135m/v1.0/", "/models/llm/smollm2-135m/v0.9/")
    refused(project, "model not in bundle: Deployment/rag-system/llm-service container 'llm-server' env "
            "LLM_MODEL_PATH points at /models/llm/smollm2-135m/v0.9/", "fix: list the model in the workload's")


def test_rollout_annotations_the_site_would_refuse(project: Path) -> None:
    """Catch it where it is cheapest: a rollout annotation's typo fails lint, not the site's plan."""
    edit(project / "manifests/20-llm-service.yaml", "    edgebundle.dev/models: smollm2-135m\n",
         "    edgebundle.dev/models: smollm2-135m\n    edgebundle.dev/rollout: canary\n"
         "    edgebundle.dev/canary-steps: \"10,50,25,100\"\n")
    refused(project, "20-llm-service.yaml: Deployment/rag-system/llm-service: edgebundle.dev/canary-steps "
            "'10,50,25,100' must rise strictly from above 0 and end at 100", 'fix: write e.g. "10,25,50,100"')
    edit(project / "manifests/20-llm-service.yaml", '"10,50,25,100"', '"10,25,50,100"')
    edit(project / "manifests/20-llm-service.yaml", "  replicas: 1\n", "  replicas: 4\n")
    r = bundle("lint", project / "bundle.yaml")  # the control: the same annotations, well formed
    assert r.exit_code == 0, r.output
    edit(project / "manifests/50-chat-ui.yaml", "metadata:\n", "metadata:\n  annotations:\n"
         "    edgebundle.dev/rollout: blue-grean\n")
    refused(project, "50-chat-ui.yaml: Deployment/rag-system/chat-ui: edgebundle.dev/rollout is 'blue-grean'",
            "fix: use one of canary, blue-green")


def test_duplicate_object(project: Path) -> None:
    shutil.copy(project / "manifests/50-chat-ui.yaml", project / "manifests/51-chat-ui-copy.yaml")
    refused(project, "51-chat-ui-copy.yaml: Deployment/rag-system/chat-ui is defined twice: in 50-chat-ui.yaml "
            "and 51-chat-ui-copy.yaml")


def test_models_pv_without_the_nfs_placeholders(project: Path) -> None:
    edit(project / "manifests/10-models-storage.yaml", "server: NFS_SERVER", "server: 10.0.0.5")
    refused(project, "10-models-storage.yaml: PersistentVolume/rag-edge-models uses only some NFS placeholders",
            "fix: write spec.nfs.server: NFS_SERVER")
    (project / "manifests/10-models-storage.yaml").unlink()
    refused(project, "the bundle stages 2 model(s) but no PersistentVolume mounts the model store")


def test_kubernetes_schema_unknown_field_wrong_type_unserved_api(project: Path) -> None:
    set_kubernetes(project, ">=1.25,<1.30")
    llm = project / "manifests/20-llm-service.yaml"
    edit(llm, "imagePullPolicy: IfNotPresent", "imagePullPolicyy: IfNotPresent")
    edit(llm, "replicas: 1", "replicas: \"1\"")
    edit(llm, "apiVersion: policy/v1\n", "apiVersion: policy/v1beta1\n")
    out = refused(
        project,
        "20-llm-service.yaml: Deployment/rag-system/llm-service: spec.template.spec.containers[0]: unknown field "
        "('imagePullPolicyy' was unexpected) (in every declared version)",
        "20-llm-service.yaml: Deployment/rag-system/llm-service: spec.replicas: expected integer, got '1'",
        "20-llm-service.yaml: PodDisruptionBudget/rag-system/llm-service: policy/v1beta1 PodDisruptionBudget is "
        "not served (in every declared version)")
    assert "3 problems" in out


def test_api_served_by_only_some_declared_versions(project: Path) -> None:
    set_kubernetes(project, ">=1.25,<1.27")
    (project / "manifests/70-hpa.yaml").write_text(yaml.safe_dump({
        "apiVersion": "autoscaling/v2beta2", "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": "chat-ui", "namespace": "rag-system"},
        "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "chat-ui"},
                 "minReplicas": 1, "maxReplicas": 2}}))
    refused(project, "70-hpa.yaml: HorizontalPodAutoscaler/rag-system/chat-ui: autoscaling/v2beta2 "
            "HorizontalPodAutoscaler is not served (in Kubernetes 1.26)")


def test_kubernetes_range_outside_the_schemas(project: Path) -> None:
    set_kubernetes(project, ">=2.0")
    refused(project, "metadata.kubernetes '>=2.0' matches none of the Kubernetes versions")
    set_kubernetes(project, "newest")
    refused(project, "metadata.kubernetes 'newest' is not a version range")


def test_create_refuses_before_writing_anything(project: Path) -> None:
    edit(project / "manifests/20-llm-service.yaml", "rag/llm-service:1.0", "rag/llm-service:0.9")
    key, _ = generate_keypair("release", project / "keys")
    before = sorted(p.relative_to(project) for p in project.rglob("*"))
    r = bundle("create", project / "bundle.yaml", "--key", key, "-o", project / "out.tar", "--json")
    assert r.exit_code == 2
    assert "uses image '127.0.0.1:5000/rag/llm-service:0.9'" in r.output and '"kind": "LintError"' in r.output
    assert sorted(p.relative_to(project) for p in project.rglob("*")) == before  # no lock, no .partial, no tar


def test_lock_applies_the_platform_rules_of_create(bundle_world: Any, tmp_path: Path) -> None:
    host = bundle_world.source.host

    def lock(images: list[dict[str, Any]], lockfile: Path) -> Result:
        spec = tmp_path / "bundle.yaml"
        spec.write_text(yaml.safe_dump({"apiVersion": "edgebundle/v1", "kind": "Bundle",
                                        "metadata": {"name": "p", "version": "1.0.0", "compatible": "x"},
                                        "spec": {"images": images}}))
        return bundle("lock", spec, "--lockfile", lockfile)

    # arm64 equals arm64/v8 (the index says variant v8)
    r = lock([{"ref": f"{host}/rag/llm-service:1.0", "platforms": ["linux/arm64"]}], tmp_path / "a.lock")
    assert r.exit_code == 0, r.output
    assert (tmp_path / "a.lock").exists() and not (tmp_path / "bundles.lock").exists()
    # a single-platform image is checked against its config, as create does
    r = lock([{"ref": f"{host}/rag/vector-db:1.0", "platforms": ["linux/arm64"]}], tmp_path / "b.lock")
    assert r.exit_code == 2
    assert f"image {host}/rag/vector-db:1.0 has no platform linux/arm64/v8 (it has linux/amd64)" in r.output
    assert not (tmp_path / "b.lock").exists()


def test_an_unknown_model_does_not_hide_the_same_objects_image_problem(project: Path) -> None:
    edit(project / "manifests/40-orchestrator.yaml", "edgebundle.dev/models: ", "edgebundle.dev/models: bge-small,")
    edit(project / "manifests/40-orchestrator.yaml", "rag/orchestrator:1.0", "rag/orchestrator:0.9")
    out = refused(project, "loads model 'bge-small'", "Deployment/rag-system/orchestrator container 'orchestrator' "
                  "uses image '127.0.0.1:5000/rag/orchestrator:0.9'")
    assert "2 problems" in out
