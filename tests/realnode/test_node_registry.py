"""Issue 16 on the real node: the dev registry (docker-registry with TLS from the dev CA and
htpasswd), images and chart published to it by `make release`'s entry point, pods pulling by
digest with the pull Secret, a pod without it blocked with the registry's own 401, and a wrong
reference blocked with the registry's 404 (containerd's "not found").

Named to sort first: the first pull of the jobs image on the node happens here (and is timed),
and test_real_node.py's last test takes the cluster down.
"""

from __future__ import annotations

import base64
import json
import re
import ssl
import subprocess
import time
import urllib.request
import uuid

import pytest
import yaml

from tests.helpers.wait import eventually
from tests.realnode.test_real_node import NODE, _json, _schedule
from thresher.devcluster import images
from thresher.devcluster.binaries import ensure
from thresher.devcluster.registry import PULL_SECRET

pytestmark = [pytest.mark.realnode, pytest.mark.timeout(900)]

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"


def _helm(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run([str(ensure(["helm"], lambda m: None)["helm"]), *args], capture_output=True, text=True,
                          timeout=300)
    assert not check or proc.returncode == 0, f"helm {' '.join(args)}: {proc.stderr}"
    return proc


def _manifest_digest(registry, repository: str, tag: str) -> str:
    """What the registry itself serves for repository:tag (its Docker-Content-Digest header)."""
    user, password = registry.credentials()
    request = urllib.request.Request(f"https://{registry.address}/v2/{repository}/manifests/{tag}", method="HEAD",
                                     headers={"Accept": OCI_MANIFEST, "Authorization": "Basic " +
                                              base64.b64encode(f"{user}:{password}".encode()).decode()})
    ctx = ssl.create_default_context(cafile=str(registry.ca_file))
    with urllib.request.urlopen(request, context=ctx, timeout=10) as resp:
        return resp.headers["Docker-Content-Digest"]


def _pulled_seconds(cluster, ns: str, pod: str) -> float | None:
    """The kubelet's own pull time: 'Successfully pulled image "X" in 3.2s (3.2s including waiting)'."""
    events = _json(cluster, "get", "events", "-n", ns, "--field-selector", f"involvedObject.name={pod}")["items"]
    for event in events:
        found = re.search(r"Successfully pulled image \S+ in ((?:[0-9.]+(?:ms|µs|h|m|s))+)", event.get("message", ""))
        if found:
            return _go_duration(found.group(1))
    return None


def _go_duration(text: str) -> float:
    """Go's time.Duration text (``1m5.25s``, ``850ms``) in seconds."""
    units = {"h": 3600, "m": 60, "s": 1, "ms": 1e-3, "µs": 1e-6}
    return sum(float(n) * units[u] for n, u in re.findall(r"([0-9.]+)(ms|µs|h|m|s)", text))


def _run_now(cluster, ns: str, name: str) -> None:
    eventually(lambda: cluster.kubectl("get", "cronjob", name, "-n", ns, check=False).returncode == 0,
               timeout=60, message=f"CronJob {name}")
    cluster.kubectl("annotate", "--overwrite", "collectionschedule", name, "-n", ns,
                    f"thresher.dev/run-now={uuid.uuid4().hex}")


def _status(cluster, ns: str, name: str) -> dict:
    return _json(cluster, "get", "collectionschedule", name, "-n", ns).get("status") or {}


def test_release_publishes_every_image_and_the_chart_by_digest(registry, published, tmp_path, timings):
    """`make release`'s entry point against the dev registry: each image is in the registry under
    its tag with the digest release printed, and the chart pulled back from oci:// pins them."""
    for target, pushed in published.images.items():
        assert pushed.repository == f"{registry.address}/{images.REPOSITORIES[target]}"
        assert _manifest_digest(registry, images.REPOSITORIES[target], pushed.tag) == pushed.digest
    assert published.chart == f"oci://{registry.address}/charts/thresher"
    config = registry.dir / "helm-registry.json"
    start = time.monotonic()
    _helm("pull", published.chart, "--version", published.version, "--ca-file", str(registry.ca_file),
          "--registry-config", str(config), "--untar", "--untardir", str(tmp_path))
    timings["helm_pull_chart_s"] = time.monotonic() - start
    values = yaml.safe_load((tmp_path / "thresher" / "values.yaml").read_text())
    assert values["image"]["digest"] == published.images["operator"].digest
    assert values["jobImages"]["cpu"]["digest"] == published.images["jobs"].digest
    rendered = _helm("template", "t", str(tmp_path / "thresher")).stdout
    assert f'image: "{published.images["operator"].reference}"' in rendered
    assert f'value: "{published.images["jobs"].reference}"' in rendered
    # The registry demands credentials: helm with none gets its Basic challenge and gives up.
    (tmp_path / "empty.json").write_text("{}")
    anonymous = _helm("pull", published.chart, "--version", published.version, "--ca-file", str(registry.ca_file),
                      "--registry-config", str(tmp_path / "empty.json"), "--destination", str(tmp_path), check=False)
    assert anonymous.returncode != 0 and re.search(r"401|unauthorized|basic credential not found",
                                                              anonymous.stderr, re.IGNORECASE), \
        anonymous.stderr


def test_a_run_pulls_its_image_from_the_registry_with_the_pull_secret(node_cluster, operator, restricted_namespace,
                                                                      jobs_image, registry, timings):
    ns = restricted_namespace
    node_cluster.kubectl("apply", "-f", "-", input=json.dumps(_schedule(
        "pulled", ns, {"container": {"image": jobs_image, "command": ["python", "-c", "print('pulled')"]}})))
    _run_now(node_cluster, ns, "pulled")
    runs = eventually(lambda: _status(node_cluster, ns, "pulled").get("recentRuns"), timeout=300, interval=1,
                      message="the run recorded")
    assert runs[0]["outcome"] == "Succeeded", runs[0]
    pod = _json(node_cluster, "get", "pods", "-n", ns, "-l", "thresher.dev/schedule=pulled")["items"][0]
    assert pod["spec"]["imagePullSecrets"] == [{"name": PULL_SECRET}]
    assert pod["spec"]["nodeName"] == NODE
    image_ids = node_cluster.kubectl("get", "pod", pod["metadata"]["name"], "-n", ns,
                                     "-o", "jsonpath={..imageID}").stdout.split()
    assert image_ids == [jobs_image], image_ids  # the kubelet pulled it from the registry, by digest
    pulled = _pulled_seconds(node_cluster, ns, pod["metadata"]["name"])
    print(f"[realnode] kubelet pulled the jobs image in {pulled}s (None: already present)")
    if pulled is not None:  # None: an earlier test of this session pulled it already
        timings["kubelet_pull_jobs_s"] = pulled


def _blocked_on_pull(cluster, ns: str, name: str, image: str) -> dict:
    """A schedule running ``image`` asked to run now, and its status.active entry once the run
    is blocked on the image pull (its message names the image)."""
    cluster.kubectl("apply", "-f", "-", input=json.dumps(_schedule(
        name, ns, {"container": {"image": image, "command": ["true"]}}, startupTimeoutSeconds=600)))
    _run_now(cluster, ns, name)

    def blocked():
        status = _status(cluster, ns, name)
        return next((e for e in status.get("active") or [] if e.get("reason") == "ImagePullBackOff"), None)
    entry = eventually(blocked, timeout=120, interval=1, message="the run blocked on the image pull")
    assert f'image "{image}" cannot be pulled' in entry["message"], entry
    return entry


def test_without_the_pull_secret_the_run_is_blocked_with_the_registrys_401(
        node_cluster, operator, namespace_without_pull_secret, published, registry):
    """The operator names the pull Secret, the namespace lacks it: the kubelet pulls without
    credentials and the registry refuses; run truth reports it with the registry's words. The
    operator image is used because nothing on the node has pulled it yet (a present image is
    never pulled again, with or without credentials)."""
    ns = namespace_without_pull_secret
    image = published.images["operator"].reference
    entry = _blocked_on_pull(node_cluster, ns, "no-creds", image)
    assert re.search(r"401 Unauthorized|unauthorized|authorization failed", entry["message"], re.IGNORECASE), entry
    print(f"[realnode] blocked without the pull Secret: {entry['message']}")

    # The fix is the Secret: the kubelet's next pull attempt uses it and the run succeeds.
    node_cluster.kubectl("apply", "-f", "-", input=json.dumps(registry.pull_secret(ns)))
    runs = eventually(lambda: _status(node_cluster, ns, "no-creds").get("recentRuns"), timeout=360, interval=2,
                      message="the run recorded after the Secret was created")
    assert runs[0]["outcome"] == "Succeeded", runs[0]


def test_a_wrong_image_reference_is_blocked_with_the_registrys_not_found(node_cluster, operator, restricted_namespace,
                                                                         registry):
    """A reference the registry does not have: its 404 reaches the run's status as containerd's
    "not found" (rpc code NotFound), not as the x509 error of containerd 1.6's fallback to the
    ``server`` entry, which used to lack the CA (registry.hosts_toml names it for both)."""
    ns = restricted_namespace
    image = f"{registry.address}/thresher/does-not-exist:0"
    entry = _blocked_on_pull(node_cluster, ns, "missing", image)
    assert f"{image}: not found" in entry["message"], entry
    assert "x509" not in entry["message"] and "unknown authority" not in entry["message"], entry
    print(f"[realnode] wrong reference: {entry['message']}")


def test_the_chart_installs_from_oci_and_its_operator_pod_pulls_with_the_secret(node_cluster, registry, published,
                                                                                 timings):
    """`helm install thresher oci://REGISTRY/charts/thresher --version X`, as a user would: the
    operator pod's image comes from the registry by the digest pinned in the chart (whether the
    pod then serves is the operator-as-a-pod work; here only where its image came from)."""
    ns = f"rn-oci-{uuid.uuid4().hex[:6]}"
    node_cluster.kubectl("create", "namespace", ns)
    node_cluster.kubectl("apply", "-f", "-", input=json.dumps(registry.pull_secret(ns)))
    start = time.monotonic()
    proc = subprocess.run([str(ensure(["helm"], lambda m: None)["helm"]), "install", "thresher-oci", published.chart,
                           "--version", published.version, "--ca-file", str(registry.ca_file),
                           "--registry-config", str(registry.dir / "helm-registry.json"), "--namespace", ns,
                           "--set", f"imagePullSecrets[0].name={PULL_SECRET}", "--set", "watchNamespaces[0]=" + ns,
                           "--kubeconfig", str(node_cluster.kubeconfig)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    timings["helm_install_from_oci_s"] = time.monotonic() - start
    try:
        def started():
            pods = _json(node_cluster, "get", "pods", "-n", ns, "-l", "app.kubernetes.io/component=operator")["items"]
            statuses = [s for p in pods for s in p["status"].get("containerStatuses") or []]
            return statuses and statuses[0].get("imageID") and (pods[0], statuses[0])
        pod, status = eventually(started, timeout=240, interval=2, message="the operator pod's image pulled")
        assert pod["spec"]["nodeName"] == NODE
        assert status["imageID"] == published.images["operator"].reference
        assert pod["spec"]["containers"][0]["image"] == published.images["operator"].reference
    finally:
        subprocess.run([str(ensure(["helm"], lambda m: None)["helm"]), "uninstall", "thresher-oci", "-n", ns,
                        "--kubeconfig", str(node_cluster.kubeconfig)], capture_output=True, timeout=120)
        node_cluster.kubectl("delete", "namespace", ns, "--wait=false", check=False)
