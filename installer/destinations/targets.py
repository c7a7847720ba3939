"""The cluster target a site file names (docs/SITE.md ``spec.cluster``)."""

from __future__ import annotations

from pathlib import Path

from installer.destinations.cluster import K3sDirTarget, KubeTarget, Target
from installer.destinations.gitops import OciArtifactTarget
from installer.site import Site


def open_target(site: Site, cache_dir: Path) -> Target:
    """``oci`` (a GitOps artifact; a kubeconfig then only watches health), else ``manifestsDir``
    (k3s), else the cluster of the kubeconfig."""
    cl = site.cluster
    if cl.oci_repository is not None:
        health = KubeTarget(cl.kubeconfig, cl.context, cache_dir) if cl.kubeconfig else None
        return OciArtifactTarget(cl.oci_repository, cl.oci_tag or site.name, site.name,
                                 plain_http=cl.oci_plain_http, health=health)
    if cl.manifests_dir is not None:
        return K3sDirTarget(cl.manifests_dir, site.name)
    return KubeTarget(cl.kubeconfig, cl.context, cache_dir)
