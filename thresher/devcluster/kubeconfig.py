"""Kubeconfig files of the dev cluster (the admin's, each component's, the kubelet's)."""

from __future__ import annotations


def kubeconfig_dict(server: str, *, user: str, ca: str | None = None, cert: str | None = None,
                    key: str | None = None, ca_data: str | None = None, cert_data: str | None = None,
                    key_data: str | None = None) -> dict:
    """A one-cluster, one-user kubeconfig: file paths (``ca``/``cert``/``key``) or inline data."""
    cluster = {"server": server}
    cluster.update({"certificate-authority": ca} if ca else {"certificate-authority-data": ca_data})
    creds = ({"client-certificate": cert, "client-key": key} if cert else
             {"client-certificate-data": cert_data, "client-key-data": key_data})
    return {
        "apiVersion": "v1", "kind": "Config", "current-context": "thresher-dev",
        "clusters": [{"name": "thresher-dev", "cluster": cluster}],
        "users": [{"name": user, "user": creds}],
        "contexts": [{"name": "thresher-dev", "context": {"cluster": "thresher-dev", "user": user}}],
    }
