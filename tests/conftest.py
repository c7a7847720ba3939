"""Shared fixtures: each lives in tests/fixtures/<concept>.py and is re-exported here."""

from tests.fixtures.models import make_gguf, minilm_dir, smollm2_gguf  # noqa: F401,E402
from tests.fixtures.registry import registry, registry_factory  # noqa: F401,E402
from tests.fixtures.kube import control_plane, kube_cluster, kube_nodes  # noqa: F401,E402
from tests.fixtures.bundles import bundle_factory, bundle_world, site_factory  # noqa: F401,E402
from tests.fixtures.prometheus import model_metrics, prometheus  # noqa: F401,E402
