"""manifests/examples apply on their own: the README's commands, run as written against an
empty namespace of the real control plane, give every schedule Ready, and everything the
schedules reference (Secrets and keys, claims, PriorityClass) exists.

Issue 16: `kubectl apply -f manifests/examples/` left schedules whose Secrets, claims and
PriorityClass (`batch-low`, while the chart creates `thresher-batch`) only `thresher demo`
created. The one liberty taken with the README: the namespace name (each test gets a fresh
one, which the session's operator watches) replaces `thresher-examples`.
"""

from __future__ import annotations

import base64
import os
import re
import shutil
import subprocess

import pytest
import yaml

from tests.conftest import REPO, kubectl_json
from tests.helpers.wait import eventually
from tests.integration.test_operator import condition

pytestmark = pytest.mark.integration

EXAMPLES = REPO / "manifests" / "examples"
README_NAMESPACE = "thresher-examples"


def readme_commands() -> list[str]:
    """The shell block of the README's section on the examples, one command per line."""
    readme = (REPO / "README.md").read_text()
    section = readme.split("## The examples on any cluster", 1)[1]
    block = re.search(r"```sh\n(.*?)```", section, re.DOTALL).group(1)
    return [line for line in block.splitlines() if line.strip()]


def kubectl_on_path(cluster, bin_dir):
    """`kubectl` as the README says it, pointed at the session's cluster."""
    bin_dir.mkdir()
    wrapper = bin_dir / "kubectl"
    wrapper.write_text(f'#!/bin/sh\nexec "{cluster.kubectl_path}" --kubeconfig="{cluster.kubeconfig}" "$@"\n')
    wrapper.chmod(0o755)
    return {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}


def shell(command: str, cwd, env) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", "-c", command], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=120, check=False)


def references(body: dict) -> dict[str, set]:
    """What a schedule needs to exist: Secrets (with keys), claims, PriorityClasses."""
    spec, job = body["spec"], body["spec"]["job"]
    secrets = {(e["valueFrom"]["secretKeyRef"]["name"], e["valueFrom"]["secretKeyRef"]["key"])
               for e in job.get("container", {}).get("env", []) if "secretKeyRef" in e.get("valueFrom", {})}
    if "tmdb" in job:
        ref = job["tmdb"]["apiKeySecretRef"]
        secrets.add((ref["name"], ref.get("key", "api-key")))
    return {"secrets": secrets,
            "claims": {spec["storage"]["claimName"]} if "storage" in spec else set(),
            "priorityclasses": {spec["priorityClassName"]} if "priorityClassName" in spec else set()}


def test_the_readme_commands_apply_every_example_with_its_prerequisites(cluster, crd, operator, namespace,
                                                                        tmp_path):
    work = tmp_path / "checkout"
    shutil.copytree(EXAMPLES, work / "manifests" / "examples")
    (work / "manifests" / "examples" / "tmdb-api.env").unlink(missing_ok=True)  # a developer's own key
    kustomization = work / "manifests" / "examples" / "kustomization.yaml"
    text = kustomization.read_text()
    assert f"namespace: {README_NAMESPACE}\n" in text
    kustomization.write_text(text.replace(f"namespace: {README_NAMESPACE}\n", f"namespace: {namespace}\n"))
    env = kubectl_on_path(cluster, tmp_path / "bin")
    commands = [c.replace(README_NAMESPACE, namespace) for c in readme_commands()]
    assert len(commands) == 3 and commands[1] == "kubectl apply -k manifests/examples", commands

    # Skipping the first step fails clearly, before anything is created.
    early = shell(commands[1], work, env)
    assert early.returncode != 0 and "tmdb-api.env" in early.stderr, early.stderr
    assert kubectl_json(cluster, "get", "collectionschedules", "-n", namespace)["items"] == []

    copied = shell(commands[0], work, env)
    assert copied.returncode == 0, copied.stderr
    key_file = work / "manifests" / "examples" / "tmdb-api.env"
    assert "REPLACE_WITH_YOUR_TMDB_API_KEY" in key_file.read_text()
    key_file.write_text(key_file.read_text().replace("REPLACE_WITH_YOUR_TMDB_API_KEY", "test-key-123"))
    applied = shell(commands[1], work, env)
    assert applied.returncode == 0, applied.stderr

    schedules = [yaml.safe_load(p.read_text()) for p in sorted(EXAMPLES.glob("*.yaml"))
                 if p.name != "kustomization.yaml"]
    names = sorted(b["metadata"]["name"] for b in schedules)
    listed = yaml.safe_load((EXAMPLES / "kustomization.yaml").read_text())["resources"]
    # Every example schedule file is in the kustomization, so `apply -k` brings them all.
    assert sorted(r for r in listed if not r.startswith("prerequisites/")) == sorted(
        p.name for p in EXAMPLES.glob("*.yaml") if p.name != "kustomization.yaml")

    def all_ready():
        items = kubectl_json(cluster, "get", "collectionschedules", "-n", namespace)["items"]
        ready = sorted(s["metadata"]["name"] for s in items
                       if condition(s.get("status") or {}, "Ready").get("status") == "True")
        return ready == names and items
    eventually(all_ready, timeout=90, message=f"every example Ready in {namespace}")
    listed = shell(commands[2], work, env)
    assert listed.returncode == 0, listed.stderr
    header, *lines = listed.stdout.splitlines()
    column = header.index(" READY ") + 1  # headers have spaces ("LAST RESULT"): cut by position
    ready = {line.split()[0]: line[column:].split()[0] for line in lines}
    assert ready == dict.fromkeys(names, "True"), listed.stdout

    # Everything the schedules reference is there, as the README's commands made it.
    secrets = {s["metadata"]["name"]: s for s in kubectl_json(cluster, "get", "secrets", "-n", namespace)["items"]}
    claims = {c["metadata"]["name"]: c for c in kubectl_json(cluster, "get", "pvc", "-n", namespace)["items"]}
    for body in schedules:
        needs = references(body)
        for name, key in needs["secrets"]:
            assert key in (secrets.get(name) or {}).get("data", {}), (body["metadata"]["name"], name, key)
        assert needs["claims"] <= set(claims), (body["metadata"]["name"], needs["claims"])
        for pc in needs["priorityclasses"]:
            kubectl_json(cluster, "get", "priorityclass", pc)
    assert base64.b64decode(secrets["tmdb-api"]["data"]["api-key"]).decode() == "test-key-123"

    # The claims ask for the cluster's default StorageClass: none named, the API server's
    # DefaultStorageClass admission fills in the default where there is one. This cluster
    # (kwok nodes, no provisioner) may have none, and then the claims stay Pending: fine for
    # Ready, which is about the CronJob.
    classes = kubectl_json(cluster, "get", "storageclass")["items"]
    default = next((c["metadata"]["name"] for c in classes if (c["metadata"].get("annotations") or {})
                    .get("storageclass.kubernetes.io/is-default-class") == "true"), None)
    for claim in claims.values():
        assert claim["spec"].get("storageClassName") == default, claim["spec"]

    labels = kubectl_json(cluster, "get", "namespace", namespace)["metadata"]["labels"]
    assert labels.get("pod-security.kubernetes.io/enforce") == "restricted"
