"""Thresher's jobs as real containers on the real local node `thresher-local` (kubelet +
containerd + runc + CNI bridge), in namespaces that enforce Pod Security `restricted`.

Deselected unless THRESHER_DEV_NODE=1 (see conftest.py). The last test stops the cluster and
checks that nothing of the node is left on the host.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from pathlib import Path

import pytest

from tests.helpers.wait import eventually
from tests.realnode.conftest import FAKE_TMDB_KEY
from thresher.devcluster.node import host
from thresher.devcluster.registry import PULL_SECRET

pytestmark = [pytest.mark.realnode, pytest.mark.timeout(1800)]

NODE = "thresher-local"


def _json(cluster, *args: str) -> dict:
    return json.loads(cluster.kubectl(*args, "-o", "json").stdout)


def test_node_registers_with_its_own_identity(node_cluster, node, timings):
    body = _json(node_cluster, "get", "node", NODE)
    labels = body["metadata"]["labels"]
    assert labels["kubernetes.io/hostname"] == NODE
    assert labels["thresher.dev/real-node"] == "true"
    info = body["status"]["nodeInfo"]
    assert info["kubeletVersion"] == "v1.34.4"
    assert info["containerRuntimeVersion"].startswith("containerd://")
    # The Node authorizer let it in as system:node:thresher-local; kwok nodes are still there.
    lease = eventually(lambda: _json(node_cluster, "get", "lease", NODE, "-n", "kube-node-lease"),
                       timeout=60, message="the node's lease")
    assert lease["spec"]["holderIdentity"] == NODE
    assert {"kwok-cpu-1", "kwok-cpu-2", "kwok-gpu-1"} <= set(node_cluster.node_readiness())
    # As the node, it cannot read Secrets of pods that are not bound to it.
    denied = node_cluster.kubectl("auth", "can-i", "list", "secrets", "--all-namespaces",
                                  f"--as=system:node:{NODE}", "--as-group=system:nodes", check=False)
    assert denied.stdout.strip().startswith("no")


def test_restricted_pod_runs_for_real(node_cluster, node, restricted_namespace, jobs_image, timings):
    """Secret as env, PVC, /tmp emptyDir, read-only root, seccomp, non-root, termination message,
    and the host reachable over the bridge: enforced by runc, not simulated."""
    ns = restricted_namespace
    node_cluster.kubectl("create", "secret", "generic", "k", "-n", ns, "--from-literal=key=s3cret")
    script = (
        "import json, os\n"
        "ro = False\n"
        "try:\n    open('/etc/x', 'w')\nexcept OSError:\n    ro = True\n"
        "open('/data/probe', 'w').write('ok')\n"
        "status = open('/proc/self/status').read()\n"
        "seccomp = status.split('Seccomp:')[1].split()[0]\n"
        "capeff = status.split('CapEff:')[1].split()[0]\n"
        "msg = json.dumps({'uid': os.getuid(), 'key': os.environ['K'], 'ro': ro, 'seccomp': seccomp,"
        " 'capeff': capeff})\n"
        "open('/dev/termination-log', 'w').write(msg)\n"
    )
    manifest = {
        "apiVersion": "v1", "kind": "List", "items": [
            {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "data", "namespace": ns},
             "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": "thresher-local",
                      "resources": {"requests": {"storage": "1Gi"}}}},
            {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "probe", "namespace": ns},
             "spec": {
                 "restartPolicy": "Never", "automountServiceAccountToken": False,
                 "nodeSelector": {"kubernetes.io/hostname": NODE},
                 "imagePullSecrets": [{"name": PULL_SECRET}],
                 "securityContext": {"runAsNonRoot": True, "runAsUser": 10001, "runAsGroup": 10001,
                                     "fsGroup": 10001, "seccompProfile": {"type": "RuntimeDefault"}},
                 "volumes": [{"name": "tmp", "emptyDir": {}},
                             {"name": "data", "persistentVolumeClaim": {"claimName": "data"}}],
                 "containers": [{
                     "name": "job", "image": jobs_image,
                     "command": ["python3", "-c", script],
                     "env": [{"name": "K", "valueFrom": {"secretKeyRef": {"name": "k", "key": "key"}}}],
                     "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}, {"name": "data", "mountPath": "/data"}],
                     "securityContext": {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                                         "runAsNonRoot": True, "capabilities": {"drop": ["ALL"]},
                                         "seccompProfile": {"type": "RuntimeDefault"}},
                 }],
             }},
        ]}
    start = time.monotonic()
    node_cluster.kubectl("apply", "-f", "-", input=json.dumps(manifest))
    pod = eventually(lambda: (p := _json(node_cluster, "get", "pod", "probe", "-n", ns))["status"].get("phase")
                     in ("Succeeded", "Failed") and p, timeout=120, message="probe pod finished")
    timings["restricted_pod_s"] = time.monotonic() - start
    assert pod["spec"]["nodeName"] == NODE
    state = pod["status"]["containerStatuses"][0]["state"]["terminated"]
    assert state["exitCode"] == 0, state
    got = json.loads(state["message"])
    assert got == {"uid": 10001, "key": "s3cret", "ro": True, "seccomp": "2", "capeff": "0000000000000000"}
    assert pod["status"]["podIP"].startswith(node.host_ip.rsplit(".", 1)[0] + ".")
    # kubectl logs goes apiserver -> kubelet (client certificate, webhook authorisation).
    assert node_cluster.kubectl("logs", "probe", "-n", ns, check=False).returncode == 0


def _schedule(name: str, ns: str, job: dict, **spec) -> dict:
    return {
        "apiVersion": "thresher.dev/v1alpha1", "kind": "CollectionSchedule",
        "metadata": {"name": name, "namespace": ns},
        "spec": {"schedule": "0 0 1 1 *", "nodeSelector": {"kubernetes.io/hostname": NODE},
                 "resources": {"cpu": "100m", "memory": "256Mi"}, "retries": 0, **spec, "job": job},
    }


def _run_now_and_wait(cluster, ns: str, name: str, timeout: float = 300) -> tuple[dict, dict]:
    cluster.kubectl("annotate", "collectionschedule", name, "-n", ns, f"thresher.dev/run-now={uuid.uuid4().hex}")

    def recorded():
        status = _json(cluster, "get", "collectionschedule", name, "-n", ns).get("status") or {}
        runs = status.get("recentRuns") or []
        return runs and status

    try:
        status = eventually(recorded, timeout=timeout, interval=1, message=f"a recorded run of {name}")
    except AssertionError:
        pods = cluster.kubectl("get", "pods,jobs,pvc", "-n", ns, "-o", "wide", check=False).stdout
        events = cluster.kubectl("get", "events", "-n", ns, check=False).stdout
        print(f"--- {ns}\n{pods}\n{events}")
        raise
    pods = _json(cluster, "get", "pods", "-n", ns, "-l", f"thresher.dev/schedule={name}")["items"]
    assert len(pods) == 1, [p["metadata"]["name"] for p in pods]
    return status, pods[0]


def _assert_real_run(status: dict, pod: dict) -> dict:
    run = status["recentRuns"][0]  # newest first
    assert pod["spec"]["nodeName"] == NODE
    terminated = pod["status"]["containerStatuses"][0]["state"]["terminated"]
    assert run["outcome"] == "Succeeded", (run, terminated)
    assert terminated["exitCode"] == 0
    message = json.loads(terminated["message"])  # the job's run result, written by the container
    assert run["result"]["items"] == message["items"] > 0
    assert run["result"]["valid"] == message["valid"]
    return message


def test_tmdb_schedule_runs_as_a_real_container(node_cluster, operator, fake_tmdb, restricted_namespace,
                                                timings):
    ns = restricted_namespace
    node_cluster.kubectl("create", "secret", "generic", "tmdb-api", "-n", ns, f"--from-literal=api-key={FAKE_TMDB_KEY}")
    schedule = _schedule("tmdb-daily", ns, {"tmdb": {
        "collection": "daily", "apiBaseUrl": fake_tmdb["baseUrl"], "requestsPerSecond": 20,
        "apiKeySecretRef": {"name": "tmdb-api", "key": "api-key"}}})
    node_cluster.kubectl("apply", "-f", "-", input=json.dumps(schedule))
    eventually(lambda: node_cluster.kubectl("get", "cronjob", "tmdb-daily", "-n", ns, check=False).returncode == 0,
               timeout=60, message="CronJob created by the operator")
    start = time.monotonic()
    status, pod = _run_now_and_wait(node_cluster, ns, "tmdb-daily")
    timings["tmdb_run_now_to_recorded_s"] = time.monotonic() - start
    message = _assert_real_run(status, pod)
    assert message.get("error") in (None, "")
    timings["tmdb_items"] = message["items"]


def test_drone_schedule_runs_as_a_real_container(node_cluster, node, operator, restricted_namespace, timings):
    import subprocess
    import sys

    ns = restricted_namespace
    # A free static local PV, claimed by name; its folder gets sample fields from the host side.
    free = [v for v in _json(node_cluster, "get", "pv")["items"]
            if v["status"].get("phase") == "Available" and v["spec"].get("storageClassName") == "thresher-local"]
    assert free, "no Available local PV"
    pv = free[0]["metadata"]["name"]
    folder = Path(free[0]["spec"]["local"]["path"])
    subprocess.run([sys.executable, "-m", "thresher.demo", "sample-fields", "--data-dir", str(folder),
                    "--count", "3", "--multispectral", "1", "--width", "256", "--height", "192"], check=True)
    for path in [folder, *folder.rglob("*")]:
        os.chown(path, 10001, 10001)
    claim = {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "fields", "namespace": ns},
             "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": "thresher-local", "volumeName": pv,
                      "resources": {"requests": {"storage": "1Gi"}}}}
    node_cluster.kubectl("apply", "-f", "-", input=json.dumps(claim))
    schedule = _schedule("drone-fields", ns, {"drone": {"task": "process", "inputPath": "input",
                                                         "outputPath": "health"}},
                         storage={"claimName": "fields", "mountPath": "/data"})
    node_cluster.kubectl("apply", "-f", "-", input=json.dumps(schedule))
    eventually(lambda: node_cluster.kubectl("get", "cronjob", "drone-fields", "-n", ns, check=False).returncode == 0,
               timeout=60, message="CronJob created by the operator")
    start = time.monotonic()
    status, pod = _run_now_and_wait(node_cluster, ns, "drone-fields")
    timings["drone_run_now_to_recorded_s"] = time.monotonic() - start
    message = _assert_real_run(status, pod)
    assert message["items"] >= 3
    # The outputs are real files on the host, written by uid 10001 through the PV.
    outputs = list((folder / "health").rglob("*"))
    assert outputs and all(p.stat().st_uid == 10001 for p in outputs)


def test_failing_upstream_fails_the_run_and_failures_rise(node_cluster, operator, fake_tmdb,
                                                         restricted_namespace):
    """A TMDB schedule whose upstream refuses connections: the real container exits with the
    upstream code, the Job fails, and consecutiveFailures counts each run."""
    ns = restricted_namespace
    node_cluster.kubectl("create", "secret", "generic", "tmdb-api", "-n", ns, f"--from-literal=api-key={FAKE_TMDB_KEY}")
    closed = fake_tmdb["baseUrl"].replace(f":{fake_tmdb['port']}/", f":{_closed_port()}/")
    schedule = _schedule("tmdb-down", ns, {"tmdb": {
        "collection": "daily", "apiBaseUrl": closed, "maxRetries": 0,
        "apiKeySecretRef": {"name": "tmdb-api", "key": "api-key"}}})
    node_cluster.kubectl("apply", "-f", "-", input=json.dumps(schedule))
    eventually(lambda: node_cluster.kubectl("get", "cronjob", "tmdb-down", "-n", ns, check=False).returncode == 0,
               timeout=60, message="CronJob created by the operator")
    for expected in (1, 2):
        node_cluster.kubectl("annotate", "--overwrite", "collectionschedule", "tmdb-down", "-n", ns,
                             f"thresher.dev/run-now={uuid.uuid4().hex}")
        status = eventually(
            lambda: (s := _json(node_cluster, "get", "collectionschedule", "tmdb-down", "-n", ns).get("status") or {})
            and s.get("consecutiveFailures") == expected and s,
            timeout=180, interval=1, message=f"{expected} consecutive failure(s)")
    run = status["recentRuns"][0]  # newest first
    assert run["outcome"] == "Failed" and "exit code 3" in run["message"], run
    assert status["lastFailureTime"]


def test_run_past_its_deadline_is_recorded_as_timed_out(node_cluster, operator, restricted_namespace):
    """activeDeadlineSeconds (spec.timeoutSeconds) kills a real run that hangs on its upstream;
    the run is recorded as TimedOut, not as an ordinary failure."""
    import socket

    ns = restricted_namespace
    node_cluster.kubectl("create", "secret", "generic", "tmdb-api", "-n", ns, f"--from-literal=api-key={FAKE_TMDB_KEY}")
    # Accepts connections (through the backlog) and never answers: the job waits on its upstream.
    silent = socket.socket()
    silent.bind(("0.0.0.0", 0))
    silent.listen(64)
    try:
        host_ip = node_cluster.node().host_ip
        schedule = _schedule("tmdb-hang", ns, {"tmdb": {
            "collection": "daily", "apiBaseUrl": f"http://{host_ip}:{silent.getsockname()[1]}/3",
            "requestTimeoutSeconds": 120, "maxRetries": 0,
            "apiKeySecretRef": {"name": "tmdb-api", "key": "api-key"}}}, timeoutSeconds=8)
        node_cluster.kubectl("apply", "-f", "-", input=json.dumps(schedule))
        eventually(lambda: node_cluster.kubectl("get", "cronjob", "tmdb-hang", "-n", ns, check=False).returncode == 0,
                   timeout=60, message="CronJob created by the operator")
        node_cluster.kubectl("annotate", "collectionschedule", "tmdb-hang", "-n", ns,
                             f"thresher.dev/run-now={uuid.uuid4().hex}")
        # (the Job controller deletes a timed-out run's pod, so this waits on status alone)
        status = eventually(
            lambda: (s := _json(node_cluster, "get", "collectionschedule", "tmdb-hang", "-n", ns).get("status") or {})
            and s.get("recentRuns") and s, timeout=180, interval=1, message="the timed-out run recorded")
    finally:
        silent.close()
    run = status["recentRuns"][0]  # newest first
    assert run["outcome"] == "TimedOut" and run["reason"] == "DeadlineExceeded", run
    assert status["lastResult"] == "TimedOut"


def _closed_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("0.0.0.0", 0))
        return sock.getsockname()[1]  # closed again when the block ends: connections are refused


def _restricted_pod(name: str, ns: str, image: str, **spec) -> dict:
    security = {"allowPrivilegeEscalation": False, "runAsNonRoot": True, "capabilities": {"drop": ["ALL"]},
                "seccompProfile": {"type": "RuntimeDefault"}}
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": ns},
            "spec": {"restartPolicy": "Never", "automountServiceAccountToken": False,
                     "securityContext": {"runAsUser": 10001, "runAsGroup": 10001},
                     "imagePullSecrets": [{"name": PULL_SECRET}],
                     "containers": [{"name": "main", "image": image,
                                     "command": ["python3", "-c", "print('ran')"], "securityContext": security}],
                     **spec}}


def test_pods_land_on_the_real_node_unless_they_ask_for_kwok(node_cluster, node, restricted_namespace, jobs_image):
    """Issue 13: with the real node present, a pod without a nodeSelector landed on a kwok node
    and "succeeded" with no container run. The kwok CPU nodes now carry kwok's NoSchedule taint in
    node mode: plain pods run for real on thresher-local, and only a pod that tolerates the taint
    (and selects kwok) is simulated."""
    from thresher.devcluster.kwok.nodes import CPU_NODES, SIMULATED_SELECTOR, SIMULATED_TOLERATION

    ns = restricted_namespace
    for name in CPU_NODES:
        taints = _json(node_cluster, "get", "node", name)["spec"].get("taints", [])
        assert {"key": "kwok.x-k8s.io/node", "value": "fake", "effect": "NoSchedule"} in taints
    pods = [_restricted_pod(f"plain-{i}", ns, jobs_image) for i in range(3)]
    pods.append(_restricted_pod("simulated", ns, jobs_image, nodeSelector=SIMULATED_SELECTOR, tolerations=[SIMULATED_TOLERATION]))
    node_cluster.kubectl("apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": pods}))

    def finished(name: str) -> dict:
        pod = _json(node_cluster, "get", "pod", name, "-n", ns)
        return pod if pod["status"].get("phase") in ("Succeeded", "Failed") else {}

    for i in range(3):
        pod = eventually(lambda: finished(f"plain-{i}"), timeout=120, message=f"plain-{i} finished")
        assert pod["spec"]["nodeName"] == NODE and pod["status"]["phase"] == "Succeeded"
        assert node_cluster.kubectl("logs", f"plain-{i}", "-n", ns).stdout.strip() == "ran"  # a real container
    # kwok runs it (Running; only Job pods get kwok's completion stage): placed, nothing executed.
    pod = eventually(lambda: (p := _json(node_cluster, "get", "pod", "simulated", "-n", ns))["status"]
                     .get("phase") == "Running" and p, timeout=60, message="simulated pod running on kwok")
    assert pod["spec"]["nodeName"] in CPU_NODES


def test_down_leaves_nothing_behind(node_cluster, node, operator, timings):
    operator.stop()  # it would only log errors about a vanished apiserver
    start = time.monotonic()
    node_cluster.down(log=lambda m: print(f"[realnode] {m}"))
    timings["down_s"] = time.monotonic() - start
    assert node.leftovers() == {"processes": [], "mounts": [], "interfaces": [], "cgroups": [], "netns": [],
                                "iptables": []}  # kube-proxy's chains: removed by kube-proxy --cleanup
    assert not node_cluster.state_dir.exists()
    assert host.kubelet_chains() == node_cluster.iptables_before
