"""Staged validation: a staging cluster signs a record; production plans and applies only with it."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest

from edgebundle.signing import generate_keypair, keyid, load_private_key
from tests.fixtures.dsse import dsse_verify, forge, load_key, load_pub, pae
from tests.fixtures.bundles import bundle_factory, bundle_world  # noqa: F401
from tests.fixtures.kube import Cluster, control_plane, kube_cluster, kube_nodes  # noqa: F401
from tests.test_plan_apply import NS, RagBundles, World, cli, deploy_v1, install_bundle, rag, write_site  # noqa: F401

pytestmark = pytest.mark.timeout(120)
SERVICES = ("llm-service", "vector-db", "orchestrator", "chat-ui")

IN_TOTO = "application/vnd.in-toto+json"


@pytest.fixture
def keys(tmp_path: Path) -> dict[str, tuple[Path, Path]]:
    return {name: generate_keypair(name, tmp_path / "keys") for name in ("staging", "intruder")}


@pytest.fixture
def service_answers(monkeypatch: pytest.MonkeyPatch) -> dict[tuple[str, str, str], tuple[int, str]]:
    """What each Service answers through the API server's service proxy: (namespace, service, path)
    -> (HTTP status, body). A stand-in for the proxy hop only (tests/README.md says why): the real
    server proxies to pod IPs from Endpoints, which refuse the loopback addresses our pods have."""
    from installer.destinations.cluster import KubeTarget

    answers: dict[tuple[str, str, str], tuple[int, str]] = {}

    def proxy_get(self: KubeTarget, namespace: str, service: str, port: str, path: str) -> tuple[int, str]:
        self.get({"apiVersion": "v1", "kind": "Service", "metadata": {"name": service, "namespace": namespace}})
        return answers.get((namespace, service, path), (503, "no endpoints available for service"))

    monkeypatch.setattr(KubeTarget, "proxy_get", proxy_get)
    return answers


@pytest.fixture
def staging(tmp_path: Path, kube_cluster: Cluster, rag: RagBundles, keys: dict[str, tuple[Path, Path]],
            service_answers: dict[tuple[str, str, str], tuple[int, str]]) -> World:
    """A staging site running bundle 1.0.0, every Service answering /health and /ready."""
    d = tmp_path / "staging"
    d.mkdir()
    (d / "kubeconfig").write_bytes((tmp_path / "kubeconfig").read_bytes())
    site = write_site(d, rag, name="staging", siteKey=str(keys["staging"][0]))
    install_bundle(site, rag.v1)
    w = World(d, site, kube_cluster, rag)
    deploy_v1(w)
    for svc in SERVICES:
        for path in ("/health", "/ready"):
            service_answers[(NS, svc, path)] = (200, json.dumps({"status": "ok"}))
    return w


def production(tmp_path: Path, rag: RagBundles, staging_pub: Path) -> Path:
    """A production site (k3s directory target) that requires a record signed by the staging key."""
    d = tmp_path / "production"
    (d / "k3s").mkdir(parents=True)
    site = write_site(d, rag, name="production", cluster={"manifestsDir": str(d / "k3s")},
                      requireValidation={"keys": [str(staging_pub)]})
    install_bundle(site, rag.v1)
    return site


def resign(statement: dict[str, Any], key_path: Path) -> bytes:
    """``statement`` in a DSSE envelope signed by ``key_path`` (what a rogue staging host could make)."""
    key = load_private_key(key_path)
    payload = json.dumps(statement).encode()
    sig = key.sign(pae(IN_TOTO, payload))
    return json.dumps({"payload": base64.b64encode(payload).decode(), "payloadType": IN_TOTO,
                       "signatures": [{"keyid": keyid(key.public_key()), "sig": base64.b64encode(sig).decode()}]}).encode()


def test_staging_record_is_required_and_checked(tmp_path: Path, staging: World, rag: RagBundles,
                                                keys: dict[str, tuple[Path, Path]]) -> None:
    out = tmp_path / "record.json"
    res = cli("validate", "--site", staging.site, "-o", out, "--poll-interval", "0.05", "--timeout", "10")
    assert res.exit_code == 0, res.output
    assert "GET /ready" in res.output and "checks passed" in res.output
    # a DSSE envelope of an in-toto Statement v1 that an independent DSSE verifier accepts
    envelope = out.read_bytes()
    statement = dsse_verify(envelope, load_pub(keys["staging"][1]), IN_TOTO)
    assert statement["_type"] == "https://in-toto.io/Statement/v1"
    assert statement["subject"][0]["digest"] == {"sha256": rag.v1.root_digest.split(":")[1]}
    assert statement["predicateType"] == "https://edgebundle.dev/attestation/staging-validation/v1"
    record = statement["predicate"]
    assert record["bundle"]["root"] == rag.v1.root_digest and record["site"] == "staging"
    assert json.loads(envelope)["signatures"][0]["keyid"] == keyid(load_private_key(keys["staging"][0]).public_key())
    assert {(c["object"], c["check"]) for c in record["checks"]} >= {
        ("Service/rag-system/orchestrator", "GET /health"), ("Service/rag-system/orchestrator", "GET /ready"),
        ("Deployment/rag-system/llm-service", "ready")}
    assert (staging.state.path / "validations" / f"{rag.v1.root_digest.split(':')[1]}.json").exists()

    prod = production(tmp_path, rag, keys["staging"][1])
    plan = tmp_path / "prod-plan.json"
    res = cli("plan", rag.v1.path, "--site", prod, "-o", plan)
    assert res.exit_code == 4, res.output
    assert "requires a staging validation record for bundle rag-edge 1.0.0" in res.output
    assert keyid(load_private_key(keys["staging"][0]).public_key())[:16] in res.output

    env = json.loads(envelope)
    edited = {**statement, "predicate": {**record, "checks": record["checks"][:1]}}  # edited after signing
    other_root = {**statement, "subject": [{"name": "x", "digest": {"sha256": rag.v2.root_digest.split(":")[1]}}]}
    for bad, why in ((json.dumps({**env, "payload": base64.b64encode(json.dumps(edited).encode()).decode()}).encode(),
                      "does not match its payload"),
                     (forge(envelope, load_key(keys["intruder"][0]), load_pub(keys["staging"][1])),
                      "does not match its payload"),  # a forged signature under the trusted key id
                     (resign(statement, keys["intruder"][0]), "valid signature(s) by trusted keys"),
                     (resign(other_root, keys["staging"][0]), "validates bundle root"),
                     (json.dumps(record).encode(), "not a DSSE envelope")):
        path = tmp_path / "bad.json"
        path.write_bytes(bad)
        res = cli("plan", rag.v1.path, "--site", prod, "-o", plan, "--validation", path)
        assert res.exit_code == 4 and why in res.output, res.output
        assert not plan.exists()

    res = cli("plan", rag.v1.path, "--site", prod, "-o", plan, "--validation", out)
    assert res.exit_code == 3, res.output
    assert cli("approve", plan, "--operator", "erin", "--yes").exit_code == 0
    kept = tmp_path / "production" / "state" / "validations" / f"{rag.v1.root_digest.split(':')[1]}.json"
    kept.rename(kept.with_suffix(".moved"))
    res = cli("apply", plan, "--site", prod)
    assert res.exit_code == 4 and "requires a staging validation record" in res.output
    kept.with_suffix(".moved").rename(kept)  # kept by the plan step: apply finds it without --validation
    res = cli("apply", plan, "--site", prod)
    assert res.exit_code == 0, res.output


def test_failing_health_endpoint_gives_no_record(tmp_path: Path, staging: World,
                                                 service_answers: dict[tuple[str, str, str], tuple[int, str]]) -> None:
    service_answers[(NS, "orchestrator", "/ready")] = (503, "vector db unreachable")
    out = tmp_path / "record.json"
    res = cli("validate", "--site", staging.site, "-o", out, "--poll-interval", "0.05", "--timeout", "5")
    assert res.exit_code == 1, res.output
    assert "Service/rag-system/orchestrator GET /ready: HTTP 503" in res.output
    assert "vector db unreachable" in res.output
    assert not out.exists() and not (staging.state.path / "validations").exists()


def test_validate_needs_a_site_key(tmp_path: Path, kube_cluster: Cluster, rag: RagBundles) -> None:
    site = write_site(tmp_path, rag)
    res = cli("validate", "--site", site)
    assert res.exit_code == 2 and "has no spec.siteKey" in res.output
