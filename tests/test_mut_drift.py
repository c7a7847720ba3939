"""Drift a dry run sees: the half of ``installer.plan.check_drift`` that only a Kubernetes API acts on
(and, last, a plan that drops an object: not drift, on a k3s directory).

The mutation run of the trust core (docs/mutation-notes/approvals.md) found these lines untested: a
k3s manifests directory has one drift token for the whole file, so any edit there is refused before
the dry runs are compared. On a cluster an object keeps its uid while other managers change it, and
only the server-side-apply dry run of the approved plan's objects shows it. Each test applies tiny
1.0.0 to the real control plane, plans and approves 1.0.1, lets "another manager" (a merge patch as
``kubectl-edit``, as ``kubectl edit`` does) change the live objects, and asserts what ``apply`` says
and that it changed nothing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.test_trust_core import MANIFEST, EXIT_ERROR, Bundles, bundle, bundles, install_and_plan  # noqa: F401
from tests.test_trust_core import installer as installer_cli

pytestmark = pytest.mark.timeout(300)

CM = ("ConfigMap", "default", "tiny-config")
PV = ("PersistentVolume", None, "tiny-models")
MANAGED_BY = "app.kubernetes.io/managed-by"


def cluster_site(bundles: Bundles, tmp_path: Path) -> Path:
    site = bundles.world.site(tmp_path / "s")
    doc = yaml.safe_load(site.read_text())
    doc["spec"]["cluster"] = {"kubeconfig": str(tmp_path / "kubeconfig"), "context": "edge"}
    site.write_text(yaml.safe_dump(doc))
    return site


def plan_and_approve(site: Path, bundle: Path, plan: Path, *extra: str) -> None:
    if extra:  # already loaded and staged
        r = installer_cli("plan", bundle, "--site", site, "-o", plan, *extra)
        assert r.exit_code == 3, r.output
    else:
        install_and_plan(site, bundle, plan)
    r = installer_cli("approve", plan, "--operator", "ops", "--yes")
    assert r.exit_code == 0, r.output


def applied_v100_approved_v101(bundles: Bundles, tmp_path: Path) -> tuple[Path, Path]:
    """tiny 1.0.0 live on the cluster, tiny 1.0.1 planned and approved: (site, the approved plan)."""
    site = cluster_site(bundles, tmp_path)
    plan_and_approve(site, bundles.v100, tmp_path / "1.json")
    r = installer_cli("apply", tmp_path / "1.json", "--site", site)
    assert r.exit_code == 0, r.output
    plan_and_approve(site, bundles.v101, tmp_path / "2.json")
    return site, tmp_path / "2.json"


def live(cluster: Any) -> dict[str, Any]:
    """What the test compares before and after a refused apply: uid, data, labels, annotations."""
    out = {}
    for kind, ns, name in (CM, PV):
        obj = cluster.get(kind, ns, name)
        meta = obj["metadata"]
        out[kind] = (meta["uid"], obj.get("data"), meta.get("labels"), meta.get("annotations"))
    return out


def refused(site: Path, plan: Path) -> str:
    r = installer_cli("apply", plan, "--site", site)
    assert r.exit_code == EXIT_ERROR, r.output
    assert r.stderr.startswith("error: the cluster drifted since the plan was made: "), r.stderr
    return r.stderr.splitlines()[0].removeprefix("error: the cluster drifted since the plan was made: ")


def test_apply_refuses_a_plan_whose_fields_another_manager_changed(bundles: Bundles, kube_cluster: Any,
                                                                   tmp_path: Path) -> None:
    """Same uids as at plan time, so only the dry runs tell: a field edgebundle sets taken over by
    another manager is named with that manager; a field of ours another manager removed (no
    conflict, but the dry run now changes it) is named as a change; both at once, in key order."""
    site, plan = applied_v100_approved_v101(bundles, tmp_path)
    kube_cluster.patch(*CM, {"data": {"a": "2"}})
    before = live(kube_cluster)
    assert refused(site, plan) == "ConfigMap/default/tiny-config: data.a (kubectl-edit) changed by another manager since the plan"
    kube_cluster.patch(*PV, {"metadata": {"labels": {MANAGED_BY: None}}})
    assert refused(site, plan) == ("ConfigMap/default/tiny-config: data.a (kubectl-edit) changed by another manager "
                                   f'since the plan; PersistentVolume/tiny-models changed: metadata.labels["{MANAGED_BY}"]')
    after = live(kube_cluster)
    assert after["ConfigMap"] == before["ConfigMap"]  # nothing applied
    assert after["PersistentVolume"][:2] == before["PersistentVolume"][:2]
    assert MANAGED_BY not in (after["PersistentVolume"][2] or {})


def test_apply_refuses_a_removed_field_alone_and_then_applies_a_fresh_plan(bundles: Bundles, kube_cluster: Any,
                                                                           tmp_path: Path) -> None:
    """Only the PersistentVolume's label was removed: the plan is refused naming that change alone;
    a plan made now puts it back, and applies."""
    site, plan = applied_v100_approved_v101(bundles, tmp_path)
    kube_cluster.patch(*PV, {"metadata": {"labels": {MANAGED_BY: None}}})
    assert refused(site, plan) == f'PersistentVolume/tiny-models changed: metadata.labels["{MANAGED_BY}"]'
    plan_and_approve(site, bundles.v101, tmp_path / "3.json")
    r = installer_cli("apply", tmp_path / "3.json", "--site", site)
    assert r.exit_code == 0, r.output
    assert kube_cluster.get(*PV)["metadata"]["labels"][MANAGED_BY] == "edgebundle"


def test_apply_refuses_what_the_server_would_now_refuse_and_applies_a_planned_replace(
        bundles: Bundles, kube_cluster: Any, tmp_path: Path) -> None:
    """Another manager made the ConfigMap immutable and changed its data: the approved plan's dry run
    is now refused by the server, and the PersistentVolume after it lost our label: both are named
    (refused, nothing changed). Planned again with ``--replace``, the approved replacement applies:
    the ConfigMap is re-created (new uid) with the bundle's data."""
    site, plan = applied_v100_approved_v101(bundles, tmp_path)
    kube_cluster.patch(*CM, {"immutable": True, "data": {"a": "2"}})
    kube_cluster.patch(*PV, {"metadata": {"labels": {MANAGED_BY: None}}})
    uid = kube_cluster.get(*CM)["metadata"]["uid"]
    problem = refused(site, plan)
    assert problem.startswith("ConfigMap/default/tiny-config would now be refused: the server refuses it: "), problem
    assert "immutable" in problem, problem
    assert problem.endswith(f'; PersistentVolume/tiny-models changed: metadata.labels["{MANAGED_BY}"]'), problem
    assert kube_cluster.get(*CM)["data"] == {"a": "2"}
    r = installer_cli("plan", bundles.v101, "--site", site, "-o", tmp_path / "3.json")
    assert r.exit_code == EXIT_ERROR and "--replace ConfigMap/default/tiny-config" in r.output, r.output
    plan_and_approve(site, bundles.v101, tmp_path / "3.json", "--replace", "ConfigMap/default/tiny-config")
    r = installer_cli("apply", tmp_path / "3.json", "--site", site)
    assert r.exit_code == 0, r.output
    cm = kube_cluster.get(*CM)
    assert cm["data"] == {"a": "1"} and cm["metadata"]["uid"] != uid


_DROPPED: dict[str, Path] = {}


def without_the_config_map(bundles: Bundles) -> Path:
    """tiny 1.1.0: the PersistentVolume only (the ConfigMap left the bundle); built once per process."""
    if "bundle" not in _DROPPED:
        w = bundles.world
        manifests = w.base / "manifests-pv-only"
        manifests.mkdir()
        (manifests / "pv.yaml").write_text(MANIFEST.split("---\n")[1])
        spec = w.spec("pv-only", "1.1.0")
        doc = yaml.safe_load(spec.read_text())
        doc["spec"]["manifests"] = [str(manifests)]
        spec.write_text(yaml.safe_dump(doc))
        r = bundle("lock", spec)
        assert r.exit_code == 0, r.output
        _DROPPED["bundle"] = w.build(spec, "pv-only", "release")
    return _DROPPED["bundle"]


def test_apply_of_a_plan_that_drops_an_object_is_not_drift(bundles: Bundles, tmp_path: Path) -> None:
    """The next bundle leaves the ConfigMap out: the approved plan deletes it, and apply (which
    previews again only what the plan keeps) carries that out. A k3s directory: no control plane."""
    site = bundles.world.site(tmp_path / "s")
    plan_and_approve(site, bundles.v100, tmp_path / "1.json")
    assert installer_cli("apply", tmp_path / "1.json", "--site", site).exit_code == 0
    k3s = tmp_path / "s" / "k3s" / "edgebundle-plant-1.yaml"
    kinds = lambda: sorted(d["kind"] for d in yaml.safe_load_all(k3s.read_text()) if d)  # noqa: E731
    assert kinds() == ["ConfigMap", "PersistentVolume"]
    plan_and_approve(site, without_the_config_map(bundles), tmp_path / "2.json")
    r = installer_cli("apply", tmp_path / "2.json", "--site", site)
    assert r.exit_code == 0, r.output
    assert kinds() == ["PersistentVolume"]


def test_apply_of_a_plan_that_approved_a_takeover_is_not_drift(bundles: Bundles, kube_cluster: Any,
                                                                tmp_path: Path) -> None:
    """Another manager changed the ConfigMap's data *before* the plan: the plan shows that takeover and
    the operator approved it; at apply the dry run shows the same takeover, which is not drift. The
    bundle's value is put back."""
    site = cluster_site(bundles, tmp_path)
    plan_and_approve(site, bundles.v100, tmp_path / "1.json")
    assert installer_cli("apply", tmp_path / "1.json", "--site", site).exit_code == 0
    kube_cluster.patch(*CM, {"data": {"a": "2"}})
    plan_and_approve(site, bundles.v101, tmp_path / "2.json")
    r = installer_cli("apply", tmp_path / "2.json", "--site", site)
    assert r.exit_code == 0, r.output
    assert kube_cluster.get(*CM)["data"] == {"a": "1"}


def test_apply_names_what_moved_per_object_three_at_most(bundles: Bundles, kube_cluster: Any, tmp_path: Path) -> None:
    """Another manager removed four fields of ours from the ConfigMap (``data.a`` and three labels) and
    three labels from the PersistentVolume, adding one of its own to each map: each object's changed
    paths are named in order, three at most, with "..." when there are more."""
    site, plan = applied_v100_approved_v101(bundles, tmp_path)
    labels: dict[str, str | None] = {MANAGED_BY: None, "edgebundle.dev/bundle": None, "edgebundle.dev/site": None}
    kube_cluster.patch(*CM, {"data": {"a": None, "b": "theirs"}, "metadata": {"labels": {**labels, "team": "x"}}})
    kube_cluster.patch(*PV, {"metadata": {"labels": {**labels, "team": "x"}}})
    named = ', '.join(f'metadata.labels["{k}"]' for k in sorted(labels))
    assert refused(site, plan) == (f'ConfigMap/default/tiny-config changed: data.a, {named.rsplit(", ", 1)[0]} ...; '
                                   f"PersistentVolume/tiny-models changed: {named}")


def test_apply_refuses_a_change_beyond_the_changes_the_plan_showed(bundles: Bundles, kube_cluster: Any,
                                                                  tmp_path: Path) -> None:
    """The PersistentVolume had lost one label of ours before the plan, which therefore updates it (the
    operator approved that); after the plan another label went: same action, other changes. Only the
    change the plan did not show is named; two takeovers on the ConfigMap are named together."""
    site = cluster_site(bundles, tmp_path)
    plan_and_approve(site, bundles.v100, tmp_path / "1.json")
    assert installer_cli("apply", tmp_path / "1.json", "--site", site).exit_code == 0
    kube_cluster.patch(*PV, {"metadata": {"labels": {MANAGED_BY: None}}})
    plan_and_approve(site, bundles.v101, tmp_path / "2.json")
    kube_cluster.patch(*PV, {"metadata": {"labels": {"edgebundle.dev/site": None}}})
    kube_cluster.patch(*CM, {"data": {"a": "2"}, "metadata": {"labels": {"edgebundle.dev/site": "elsewhere"}}})
    assert refused(site, tmp_path / "2.json") == (
        "ConfigMap/default/tiny-config: data.a (kubectl-edit), metadata.labels.edgebundle.dev/site (kubectl-edit) "
        'changed by another manager since the plan; PersistentVolume/tiny-models changed: '
        'metadata.labels["edgebundle.dev/site"]')
