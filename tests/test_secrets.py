"""Plaintext credentials are refused at build time (bundler/secrets.py), naming file, line and
detector, unless the spec allows them with a reason; the value is never printed."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from bundler.secrets import Allowance, kubernetes_findings, refused, scan
from tests.fixtures.bundles import BUNDLE

pytestmark = pytest.mark.timeout(300)

PASSWORD = "hunter2-Xk29dkLQp0aZ"
GITHUB = "ghp_" + "1234567890abcdefghijklmnopqrstuvwxyz"  # the shape of a GitHub token

SECRET_MANIFEST = f"""apiVersion: v1
kind: Secret
metadata: {{name: db, namespace: rag-system}}
stringData:
  password: "{PASSWORD}"
"""

ENV_MANIFEST = f"""apiVersion: apps/v1
kind: Deployment
metadata: {{name: api, namespace: rag-system}}
spec:
  selector: {{matchLabels: {{app: api}}}}
  template:
    metadata: {{labels: {{app: api}}}}
    spec:
      containers:
      - name: api
        image: rag/llm-service:1.0
        env:
        - name: LOG_LEVEL
          value: debug
        - name: HF_TOKEN
          value: "{GITHUB}"
        - name: DB_PASSWORD
          valueFrom: {{secretKeyRef: {{name: db, key: password}}}}
"""


def test_kubernetes_aware_findings_name_the_line_and_never_the_value(tmp_path: Path) -> None:
    found = list(kubernetes_findings("m/10-db.yaml", SECRET_MANIFEST.encode()))
    assert [(f.line, f.detector) for f in found] == [(5, "Kubernetes Secret stringData")]
    found = list(kubernetes_findings("m/20-api.yaml", ENV_MANIFEST.encode()))
    assert [(f.line, f.detector) for f in found] == [(16, "credential in env HF_TOKEN")]  # not LOG_LEVEL, not valueFrom
    assert all(PASSWORD not in f.text() and GITHUB not in f.text() for f in found)


def test_plugins_find_keys_and_tokens_in_model_files(tmp_path: Path) -> None:
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text(json.dumps({"hidden_size": 64, "hub_token": GITHUB}, indent=1))
    (model / "README.md").write_text("x\n-----BEGIN RSA PRIVATE KEY-----\nMIIEow\n-----END RSA PRIVATE KEY-----\n")
    (model / "weights.safetensors").write_bytes(b"AKIAIOSFODNN7EXAMPLE" * 10)  # weights are not scanned
    found = scan([(f"model/{p.name}", p) for p in sorted(model.iterdir())])
    kinds = {(f.file, f.detector) for f in found}
    assert ("model/config.json", "GitHub Token") in kinds
    assert ("model/README.md", "Private Key") in kinds
    assert not any(f.file == "model/weights.safetensors" for f in found)


def test_an_allowance_covers_only_what_it_names() -> None:
    found = list(kubernetes_findings("m/20-api.yaml", ENV_MANIFEST.encode()))
    f = found[0]
    assert refused(found, [Allowance("m/20-api.yaml", f.detector, "demo token", hashed=f.hashed)]) == []
    assert refused(found, [Allowance("m/20-api.yaml", f.detector, "x", line=f.line + 1)]) == found
    assert refused(found, [Allowance("m/other.yaml", f.detector, "x")]) == found
    assert refused(found, [Allowance("m/20-api.yaml", f.detector, "x", hashed="0" * 40)]) == found


def _spec(tmp_path: Path, bundle_world: Any, manifest: str, allow: list[dict[str, Any]] | None) -> Path:
    mdir = tmp_path / "manifests"
    mdir.mkdir(parents=True)
    (mdir / "20-api.yaml").write_text(manifest)
    doc: dict[str, Any] = {
        "apiVersion": "edgebundle/v1", "kind": "Bundle",
        "metadata": {"name": "rag-edge", "version": "1.0.0", "compatible": "rag-edge/x86_64"},
        "spec": {"images": [{"ref": f"{bundle_world.source.host}/rag/llm-service:1.0", "platforms": ["linux/amd64"]}],
                 "manifests": ["manifests/"]}}
    if allow is not None:
        doc["spec"]["secrets"] = {"allow": allow}
    path = tmp_path / "bundle.yaml"
    path.write_text(json.dumps(doc))
    return path


def test_lint_refuses_a_plaintext_token_and_accepts_it_allowed_with_a_reason(bundle_world: Any, tmp_path: Path) -> None:
    manifest = ENV_MANIFEST.replace("rag/llm-service:1.0", f"{bundle_world.source.host}/rag/llm-service:1.0")
    spec = _spec(tmp_path / "a", bundle_world, manifest, None)
    r = subprocess.run([BUNDLE, "lint", str(spec)], capture_output=True, text=True, timeout=240)
    assert r.returncode == 2, r.stdout + r.stderr
    out = r.stdout + r.stderr
    assert "20-api.yaml:16" in out and "credential in env HF_TOKEN" in out and "GitHub Token" in out
    assert GITHUB not in out and "spec.secrets.allow" in out
    allow = [{"file": "20-api.yaml", "line": 16, "detector": d, "reason": "a demo token, revoked"}
             for d in ("credential in env HF_TOKEN", "GitHub Token", "Base64 High Entropy String")]
    spec = _spec(tmp_path / "b", bundle_world, manifest, allow)
    r = subprocess.run([BUNDLE, "lint", str(spec)], capture_output=True, text=True, timeout=240)
    assert r.returncode == 0, r.stdout + r.stderr
    spec = _spec(tmp_path / "c", bundle_world, manifest, [{**allow[0], "reason": ""}])
    r = subprocess.run([BUNDLE, "lint", str(spec)], capture_output=True, text=True, timeout=240)
    assert r.returncode == 2 and "reason" in r.stdout + r.stderr
