"""manifests/operator/ (the kubectl install) is the chart rendered with default values; it must not drift."""

from __future__ import annotations

import os
import subprocess

import yaml

from tests.helpers.tools import REPO, require_helm

OPERATOR = REPO / "manifests" / "operator"
GENERATED = ("serviceaccount.yaml", "rbac.yaml", "deployment.yaml", "service.yaml", "user-roles.yaml",
             "poddisruptionbudget.yaml")


def test_generated_files_match_a_fresh_render(tmp_path):
    result = subprocess.run(["bash", str(OPERATOR / "render.sh"), str(tmp_path)], capture_output=True, text=True,
                            timeout=120, env={**os.environ, "HELM": require_helm()}, check=False)
    assert result.returncode == 0, result.stderr
    for name in GENERATED:
        assert (tmp_path / name).read_text() == (OPERATOR / name).read_text(), (
            f"manifests/operator/{name} is stale: run manifests/operator/render.sh")


def test_kustomization_lists_every_manifest_and_the_namespace_is_restricted():
    kustomization = yaml.safe_load((OPERATOR / "kustomization.yaml").read_text())
    assert kustomization["resources"] == ["namespace.yaml", *GENERATED]
    namespace = yaml.safe_load((OPERATOR / "namespace.yaml").read_text())
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    for name in GENERATED:
        for doc in yaml.safe_load_all((OPERATOR / name).read_text()):
            if doc and doc["kind"] not in ("ClusterRole", "ClusterRoleBinding"):
                assert doc["metadata"]["namespace"] == namespace["metadata"]["name"], name
            if doc:
                assert doc["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "kubectl", name
