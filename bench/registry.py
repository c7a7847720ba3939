"""Loopback CNCF distribution registries for the bench (source registry, fresh site registries).

Invariant: each registry listens on 127.0.0.1 only, has its own config and storage directory
(never the packaged /etc/docker/registry/config.yml, which turns on auth), and is stopped by
its own pid.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import TracebackType

REGISTRY_BIN = shutil.which("docker-registry") or "/usr/bin/docker-registry"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class LoopbackRegistry:
    """``docker-registry serve`` on a free loopback port with storage under ``workdir``."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, timeout: float = 15.0) -> "LoopbackRegistry":
        self.workdir.mkdir(parents=True, exist_ok=True)
        config = {
            "version": 0.1, "log": {"level": "warn"},
            "storage": {"filesystem": {"rootdirectory": str(self.workdir / "storage")},
                        "delete": {"enabled": True}},
            "http": {"addr": self.host, "secret": "edgebundle-bench"},
        }
        cfg = self.workdir / "config.yml"
        cfg.write_text(json.dumps(config))  # JSON is YAML
        with open(self.workdir / "registry.log", "ab") as log:
            self.proc = subprocess.Popen([REGISTRY_BIN, "serve", str(cfg)], stdout=log, stderr=log)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                break
            try:
                with urllib.request.urlopen(f"http://{self.host}/v2/", timeout=1):
                    return self
            except (urllib.error.URLError, ConnectionError, OSError):
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"registry did not start on {self.host}; see {self.workdir / 'registry.log'}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def manifest_digest(self, repo: str, ref: str) -> str | None:
        """The digest the registry serves for ``repo:ref`` (None when it has none)."""
        accept = ",".join([
            "application/vnd.oci.image.index.v1+json", "application/vnd.oci.image.manifest.v1+json",
            "application/vnd.docker.distribution.manifest.list.v2+json",
            "application/vnd.docker.distribution.manifest.v2+json"])
        req = urllib.request.Request(f"http://{self.host}/v2/{repo}/manifests/{ref}", method="HEAD",
                                     headers={"Accept": accept})
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                return resp.headers.get("Docker-Content-Digest")
        except urllib.error.HTTPError:
            return None

    def __enter__(self) -> "LoopbackRegistry":
        return self.start()

    def __exit__(self, *exc: object | TracebackType) -> None:
        self.stop()
