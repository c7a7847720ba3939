"""A real Kubernetes control plane on 127.0.0.1: etcd, kube-apiserver, kube-controller-manager and
kube-scheduler, built from Debian's source package by ``tests/cluster/build-control-plane.sh``.

One control plane serves a whole test session (starting one takes ~10 s); tests get a clean
cluster from :meth:`ControlPlane.reset`. Everything listens on 127.0.0.1 free ports, with a PKI and
an admin token generated for the run (``cryptography``), etcd's data on a tmpfs-backed directory
when one is available, and each process's log kept in the run directory (printed when it dies).

No kubelet runs: :mod:`tests.cluster.agent` plays the nodes (registers them, marks pods running
or failing, deletes terminated pods, provisions claims).
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

REPO = Path(__file__).resolve().parents[2]
BUILD_SCRIPT = REPO / "tests" / "cluster" / "build-control-plane.sh"
BINARIES = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler")
#: Debian bookworm's kubernetes source package is 1.20.2; the server reports this.
SERVER_VERSION = "v1.20.2"
#: Service ClusterIPs are only data here (no kube-proxy, no traffic), from a documentation range.
SERVICE_RANGE = "198.18.0.0/16"


def binaries_dir() -> Path:
    return Path(os.environ.get("EDGEBUNDLE_KUBE_DIR") or Path.home() / ".cache/edgebundle/kube-1.20.2/bin")


def missing_binaries() -> list[str]:
    d = binaries_dir()
    return [b for b in BINARIES if not os.access(d / b, os.X_OK)]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _pem_cert(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _pem_key(key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def make_pki(d: Path) -> None:
    """A CA, the API server's serving certificate (127.0.0.1, localhost), a service-account key."""
    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "edgebundle-test-ca")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
          .not_valid_after(now + datetime.timedelta(days=2))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .add_extension(x509.KeyUsage(True, False, False, False, False, True, True, False, False), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    san = x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.DNSName("kubernetes"),
                                       x509.IPAddress(ipaddress.ip_address("127.0.0.1"))])
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kube-apiserver")]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=2))
            .add_extension(san, critical=False)
            .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    d.mkdir(parents=True, exist_ok=True)
    (d / "ca.crt").write_bytes(_pem_cert(ca))
    (d / "apiserver.crt").write_bytes(_pem_cert(cert) + _pem_cert(ca))
    (d / "apiserver.key").write_bytes(_pem_key(key))
    sa = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    (d / "sa.key").write_bytes(_pem_key(sa))
    (d / "sa.pub").write_bytes(sa.public_key().public_bytes(serialization.Encoding.PEM,
                                                             serialization.PublicFormat.SubjectPublicKeyInfo))


def kubeconfig_text(server: str, ca: Path, token: str, context: str = "edge") -> str:
    return (f"apiVersion: v1\nkind: Config\nclusters:\n- name: test\n  cluster:\n    server: {server}\n"
            f"    certificate-authority: {ca}\nusers:\n- name: admin\n  user:\n    token: {token}\n"
            f"contexts:\n- name: {context}\n  context:\n    cluster: test\n    user: admin\n"
            f"current-context: {context}\n")


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen[bytes]
    log: Path

    def tail(self, n: int = 40) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""


@dataclass
class ControlPlane:
    """The four processes, their run directory, and how to reach the API server."""

    run: Path
    procs: list[Proc] = field(default_factory=list)
    token: str = field(default_factory=lambda: secrets.token_hex(24))
    api_port: int = 0

    @property
    def server(self) -> str:
        return f"https://127.0.0.1:{self.api_port}"

    @property
    def ca(self) -> Path:
        return self.run / "pki" / "ca.crt"

    def write_kubeconfig(self, path: Path, context: str = "edge") -> Path:
        path.write_text(kubeconfig_text(self.server, self.ca, self.token, context))
        return path

    # --- lifecycle ------------------------------------------------------------------------------

    def _spawn(self, name: str, args: list[str]) -> Proc:
        log = self.run / f"{name}.log"
        f = open(log, "wb")
        popen = subprocess.Popen([str(binaries_dir() / name.split("#")[0]), *args], stdout=f, stderr=subprocess.STDOUT,
                                 stdin=subprocess.DEVNULL, start_new_session=True)
        f.close()
        proc = Proc(name, popen, log)
        self.procs.append(proc)
        return proc

    def _check_alive(self) -> None:
        for p in self.procs:
            if p.popen.poll() is not None:
                raise RuntimeError(f"{p.name} exited with {p.popen.returncode}:\n{p.tail()}")

    def _get(self, path: str, timeout: float = 5) -> tuple[int, str]:
        ctx = ssl.create_default_context(cafile=str(self.ca))
        req = urllib.request.Request(self.server + path, headers={"Authorization": f"Bearer {self.token}"})
        try:
            with urllib.request.urlopen(req, context=ctx, timeout=timeout) as r:
                return r.status, r.read().decode(errors="replace")
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode(errors="replace")

    def _wait(self, what: str, ok: "callable[[], bool]", timeout: float) -> None:  # type: ignore[valid-type]
        deadline = time.monotonic() + timeout
        while True:
            self._check_alive()
            try:
                if ok():
                    return
            except (OSError, ssl.SSLError):
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"{what} not ready after {timeout:g} s:\n"
                                   + "\n".join(f"--- {p.name}\n{p.tail(15)}" for p in self.procs))
            time.sleep(0.2)

    def start(self) -> "ControlPlane":
        pki = self.run / "pki"
        make_pki(pki)
        (self.run / "tokens.csv").write_text(f"{self.token},admin,admin,system:masters\n")
        etcd_dir = self._etcd_dir()
        etcd_client, etcd_peer = free_port(), free_port()
        self._spawn("etcd", [
            "--name", "test", "--data-dir", str(etcd_dir),
            "--listen-client-urls", f"http://127.0.0.1:{etcd_client}",
            "--advertise-client-urls", f"http://127.0.0.1:{etcd_client}",
            "--listen-peer-urls", f"http://127.0.0.1:{etcd_peer}",
            "--initial-advertise-peer-urls", f"http://127.0.0.1:{etcd_peer}",
            "--initial-cluster", f"test=http://127.0.0.1:{etcd_peer}",
            "--unsafe-no-fsync", "--log-level", "warn", "--logger", "zap"])
        self.api_port = free_port()
        self._spawn("kube-apiserver", [
            "--etcd-servers", f"http://127.0.0.1:{etcd_client}",
            "--bind-address", "127.0.0.1", "--advertise-address", "127.0.0.1",
            "--secure-port", str(self.api_port), "--insecure-port", "0",
            "--tls-cert-file", str(pki / "apiserver.crt"), "--tls-private-key-file", str(pki / "apiserver.key"),
            "--token-auth-file", str(self.run / "tokens.csv"), "--authorization-mode", "RBAC",
            "--service-account-issuer", "https://kubernetes.default.svc",
            "--service-account-key-file", str(pki / "sa.pub"),
            "--service-account-signing-key-file", str(pki / "sa.key"),
            "--service-cluster-ip-range", SERVICE_RANGE, "--endpoint-reconciler-type", "none",
            "--allow-privileged=true", "--cert-dir", str(self.run / "certs"),
            "--enable-priority-and-fairness=false", "--v", "1"])
        self._wait("kube-apiserver", lambda: self._get("/readyz")[0] == 200, 90)
        kubeconfig = self.write_kubeconfig(self.run / "admin.kubeconfig")
        self._spawn("kube-controller-manager", [
            "--kubeconfig", str(kubeconfig), "--authentication-kubeconfig", str(kubeconfig),
            "--authorization-kubeconfig", str(kubeconfig),
            "--bind-address", "127.0.0.1", "--secure-port", str(free_port()), "--port", "0",
            "--leader-elect=false", "--use-service-account-credentials=false",
            "--service-account-private-key-file", str(pki / "sa.key"), "--root-ca-file", str(pki / "ca.crt"),
            # no kubelets send heartbeats: the node agent owns node health
            "--controllers", "*,-nodelifecycle,-nodeipam,-cloud-node-lifecycle,-service,-route,"
                             "-ttl,-bootstrapsigner,-tokencleaner,-csrsigning,-csrapproving,-csrcleaner",
            "--concurrent-deployment-syncs", "5", "--v", "1"])
        self._spawn("kube-scheduler", [
            "--kubeconfig", str(kubeconfig), "--authentication-kubeconfig", str(kubeconfig),
            "--authorization-kubeconfig", str(kubeconfig),
            "--bind-address", "127.0.0.1", "--secure-port", str(free_port()), "--port", "0",
            "--leader-elect=false", "--v", "1"])
        self._wait("default service account controller",
                   lambda: self._get("/api/v1/namespaces/default/serviceaccounts/default")[0] == 200, 60)
        return self

    def _etcd_dir(self) -> Path:
        shm = Path("/dev/shm")
        if shm.is_dir() and os.access(shm, os.W_OK):
            d = Path(os.path.realpath(shm)) / f"edgebundle-etcd-{os.getpid()}-{secrets.token_hex(4)}"
            d.mkdir(mode=0o700)
            (self.run / "etcd-data").symlink_to(d)
            return d
        d = self.run / "etcd-data"
        d.mkdir(mode=0o700)
        return d

    def stop(self) -> None:
        for p in reversed(self.procs):
            if p.popen.poll() is None:
                try:
                    os.killpg(p.popen.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        for p in reversed(self.procs):
            try:
                p.popen.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(p.popen.pid, signal.SIGKILL)
                p.popen.wait(5)
        link = self.run / "etcd-data"
        if link.is_symlink():
            shutil.rmtree(os.path.realpath(link), ignore_errors=True)
            link.unlink()
