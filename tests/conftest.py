"""Shared fixtures: each lives in tests/fixtures/<concept>.py and is re-exported here."""

from tests.fixtures.models import make_gguf, minilm_dir, smollm2_gguf  # noqa: F401,E402
from tests.fixtures.registry import registry, registry_factory  # noqa: F401,E402
from tests.fixtures.kube import control_plane, kube_cluster, kube_nodes  # noqa: F401,E402
from tests.fixtures.bundles import bundle_factory, bundle_world, site_factory  # noqa: F401,E402
from tests.fixtures.prometheus import model_metrics, prometheus  # noqa: F401,E402

import os  # noqa: E402

import pytest  # noqa: E402


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """In a mutant's run (``make mutation``, docs/MUTATION.md), the tests that start the Kubernetes
    control plane go last: with ``-x`` a mutant a fast test kills never pays for starting it."""
    if "MUTANT_UNDER_TEST" in os.environ:
        items.sort(key=lambda item: "control_plane" in getattr(item, "fixturenames", ()))


@pytest.fixture(scope="session", autouse=True)
def _fresh_scan_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Every run scans image layers afresh (the build host's layer-scan cache starts empty), so a
    scanner change is never masked by what an earlier run cached; tests/test_sbom.py tests the cache."""
    os.environ["EDGEBUNDLE_SCAN_CACHE"] = str(tmp_path_factory.mktemp("layerscan-cache"))
