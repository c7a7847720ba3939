"""An in-process Kubernetes API server (plus test-side controllers) for testing the apply path.

No real cluster can run on the test machines, so product code talks to this server instead, over
real HTTP with the official ``kubernetes`` client and a real kubeconfig::

    server = KubeAPIServer().start()
    server.add_node("edge-node-1", cpu="8", memory="32Gi", gpus=1)
    kubeconfig = server.write_kubeconfig(tmp_path / "kubeconfig")   # context "edge", bearer token
    controllers = Controllers(server).start()                       # or .run_once() / .settle()
    ... product code: kubernetes.config.load_kube_config(config_file=kubeconfig, context="edge") ...
    server.get("Deployment", "ns", "web"); server.objects("Pod", "ns"); server.requests
    server.fail_workload("ns", "web", reason="CrashLoopBackOff", message="...")
    server.set_service_endpoint("ns", "llm", 8080, "/health", body={"status": "ok"})
    controllers.stop(); server.stop()

Modules: ``server`` (HTTP, discovery, proxy, test-side API), ``store`` (write semantics),
``fields`` (managedFields, apply, patches), ``validation``/``defaults`` (apiserver rules),
``resources`` (served types, CRDs), ``selectors``, ``errors`` (Status documents), ``controllers``.
"""

from tests.kubeapi.controllers import Controllers
from tests.kubeapi.server import Failure, KubeAPIServer, ProxyRequest, ProxyResponse, RequestRecord

__all__ = ["Controllers", "Failure", "KubeAPIServer", "ProxyRequest", "ProxyResponse", "RequestRecord"]
