"""The demo's decisions: which mode it runs in, and how each example runs on the real node."""

from __future__ import annotations

from pathlib import Path

import pytest
import typer
import yaml

from thresher.api.schedule import CollectionSchedule, parse_schedule
from thresher.demo.loop import (EXAMPLES, NAMESPACE, REAL_NODE, choose_mode, demo_objects, for_real_node, local_claim,
                                node_roles)

EXAMPLES_DIR = Path(__file__).resolve().parents[3] / "manifests" / "examples"
IMAGE = "docker.io/library/thresher-jobs:0.1.0"
FAKE = "http://10.88.0.1:41234/3"


def _example(name: str) -> dict:
    body = yaml.safe_load((EXAMPLES_DIR / name).read_text())
    body["metadata"]["namespace"] = NAMESPACE
    return body


def test_real_node_is_the_default_where_it_can_run():
    assert choose_mode(None, None) is True
    assert choose_mode(True, None) is True


def test_kwok_when_refused_or_when_the_machine_cannot():
    assert choose_mode(False, None) is False
    assert choose_mode(False, "preflight 'root': ...") is False
    assert choose_mode(None, "preflight 'root': ...") is False


def test_asking_for_the_node_where_it_cannot_run_is_an_error_naming_the_check():
    with pytest.raises(typer.BadParameter, match="preflight 'swap'"):
        choose_mode(True, "preflight 'swap': swap is on")


def test_every_demo_example_exists_and_is_valid():
    for name in EXAMPLES:
        assert isinstance(parse_schedule(_example(name)), CollectionSchedule), name


def test_tmdb_examples_run_on_the_real_node_against_the_fake_server():
    for name in ("tmdb-daily.yaml", "tmdb-weekly.yaml"):
        original = _example(name)
        body = for_real_node(original, IMAGE, FAKE)
        assert body["spec"]["nodeSelector"]["kubernetes.io/hostname"] == REAL_NODE
        assert body["spec"]["job"]["tmdb"]["apiBaseUrl"] == FAKE
        assert "apiBaseUrl" not in original["spec"]["job"]["tmdb"]  # the example itself is untouched
        assert isinstance(parse_schedule(body), CollectionSchedule)


def test_with_a_real_key_tmdb_keeps_the_real_api():
    body = for_real_node(_example("tmdb-daily.yaml"), IMAGE, None)
    assert "apiBaseUrl" not in body["spec"]["job"]["tmdb"]


def test_heartbeat_runs_its_command_in_the_local_jobs_image():
    original = _example("container-every-minute.yaml")
    body = for_real_node(original, IMAGE, FAKE)
    container = body["spec"]["job"]["container"]
    assert container["image"] == IMAGE and original["spec"]["job"]["container"]["image"] == "busybox:1.36"
    assert container["command"] == original["spec"]["job"]["container"]["command"]
    assert isinstance(parse_schedule(body), CollectionSchedule)


def test_gpu_example_stays_on_kwok_and_cpu_drone_goes_to_the_real_node():
    assert for_real_node(_example("drone-gpu.yaml"), IMAGE, FAKE) is None
    body = for_real_node(_example("drone-fields.yaml"), IMAGE, FAKE)
    assert body["spec"]["nodeSelector"] == {"kubernetes.io/hostname": REAL_NODE}
    assert body["spec"]["job"]["drone"]["backend"] == "cpu"


def test_local_claim_binds_by_volume_name():
    claim = local_claim("field-images", "thresher-local-pv3")
    assert claim["metadata"] == {"name": "field-images", "namespace": NAMESPACE}
    assert claim["spec"]["volumeName"] == "thresher-local-pv3"
    assert claim["spec"]["storageClassName"] == "thresher-local"


def test_demo_objects_quote_the_key_and_hold_every_secret_the_examples_use():
    docs = list(yaml.safe_load_all(demo_objects('a"b: c')))
    secrets = {d["metadata"]["name"]: d["stringData"] for d in docs if d["kind"] == "Secret"}
    assert secrets["tmdb-api"]["api-key"] == 'a"b: c'
    for name in EXAMPLES:
        spec = _example(name)["spec"]
        refs = [e["valueFrom"]["secretKeyRef"] for e in spec["job"].get("container", {}).get("env", [])
                if "valueFrom" in e]
        refs += [spec["job"]["tmdb"]["apiKeySecretRef"]] if "tmdb" in spec["job"] else []
        for ref in refs:
            assert ref.get("key", "api-key") in secrets[ref["name"]], (name, ref)


def test_demo_objects_are_the_examples_prerequisites_in_the_demo_namespace():
    """Issue 16: the demo made its own PriorityClass (batch-low) and heartbeat Secret while the
    chart's class is thresher-batch; now it applies the examples' own files, and every class an
    example names exists."""
    docs = list(yaml.safe_load_all(demo_objects("k")))
    classes = {d["metadata"]["name"] for d in docs if d["kind"] == "PriorityClass"}
    for name in EXAMPLES:
        wanted = _example(name)["spec"].get("priorityClassName")
        assert wanted is None or wanted in classes, (name, wanted)
    own = yaml.safe_load((EXAMPLES_DIR / "prerequisites" / "priorityclass.yaml").read_text())
    assert [d for d in docs if d["kind"] == "PriorityClass"] == [own]
    for doc in docs:
        if doc["kind"] not in ("PriorityClass", "Namespace"):
            assert doc["metadata"]["namespace"] == NAMESPACE, doc["metadata"]


def test_the_demo_says_which_nodes_are_real_and_which_simulated():
    """Issue 13: the GPU node stays simulated in the real-node demo; the output must say so, and
    say that the kwok CPU nodes only take pods that ask for them."""
    lines = node_roles().splitlines()
    assert "thresher-local REAL" in lines[0]
    assert "kwok-gpu-1 SIMULATED GPU node" in lines[1]
    assert "kwok-cpu-1, kwok-cpu-2 SIMULATED" in lines[2] and "kwok.x-k8s.io/node=fake:NoSchedule" in lines[2]


def test_a_demo_failure_is_its_message_and_exit_1_not_a_traceback(monkeypatch, capsys):
    """A missing chart (an installed package without its data), a component that does not start
    or a failed image build ends `thresher demo` with the reason, exit code 1."""
    from thresher.demo import loop
    from thresher.demo.assets import AssetError

    def broken(down, node):
        raise AssetError("the demo's chart (charts/thresher) is missing")

    monkeypatch.setattr(loop, "_run_demo", broken)
    with pytest.raises(typer.Exit) as exit_info:
        loop.run_demo(node=False)
    assert exit_info.value.exit_code == 1
    assert capsys.readouterr().err.strip() == "error: the demo's chart (charts/thresher) is missing"


def _rendered_deployment(tmp_path, values: dict) -> dict:
    """The chart's Deployment rendered by helm with ``values`` (helm checks values.schema.json,
    additionalProperties: false, so a misspelled value fails here)."""
    import json

    from tests.helpers.tools import require_helm, run_tool
    from thresher.demo.assets import asset

    values_file = tmp_path / "values.json"
    values_file.write_text(json.dumps(values))
    rendered = run_tool([require_helm(), "template", "thresher", str(asset("chart")), "--values", str(values_file)])
    assert rendered.returncode == 0, rendered.stderr
    (deployment,) = [d for d in yaml.safe_load_all(rendered.stdout) if d and d["kind"] == "Deployment"]
    return deployment


def test_in_the_simulated_mode_the_charts_deployment_asks_for_kwok_and_passes_the_values_schema(tmp_path):
    """Without the real node the operator's pods could only be simulated: the demo runs the
    operator as a local process and the chart's Deployment asks for kwok (tolerating the taint
    kwok's CPU nodes carry when a real node is present)."""
    from thresher.demo.loop import chart_values
    from thresher.devcluster.kwok.nodes import SIMULATED_TAINT

    values = chart_values()
    pod = _rendered_deployment(tmp_path, values)["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == values["nodeSelector"] and pod["tolerations"] == values["tolerations"]
    (toleration,) = values["tolerations"]
    assert (toleration["key"], toleration["value"], toleration["effect"]) == (
        SIMULATED_TAINT["key"], SIMULATED_TAINT["value"], SIMULATED_TAINT["effect"])
    assert values["nodeSelector"] == {"type": "kwok"}


def test_on_the_real_node_the_operator_is_the_charts_two_replicas_there_with_leader_election(tmp_path):
    """Issue 16: on the real node the demo runs the operator as the chart's Deployment: two
    replicas pinned to thresher-local (the kwok CPU nodes are tainted, a pod there runs
    nothing), leader election on, no kwok toleration, in-cluster config (no kubeconfig flag)."""
    from thresher.demo.loop import OPERATOR_REPLICAS, chart_values

    values = chart_values(real_node=True)
    deployment = _rendered_deployment(tmp_path, values)
    pod = deployment["spec"]["template"]["spec"]
    assert deployment["spec"]["replicas"] == OPERATOR_REPLICAS == 2
    assert pod["nodeSelector"] == {"kubernetes.io/hostname": REAL_NODE}
    assert "tolerations" not in pod and not pod.get("hostNetwork")
    command = pod["containers"][0]["command"]
    assert "--leader-elect" in command and "--kubeconfig" not in command
    assert command[command.index("--leader-elect-resource-name") + 1] == "thresher"  # loop.LEASE


def test_prometheus_scrapes_the_local_process_or_every_endpoint_of_the_metrics_service(tmp_path):
    """The simulated mode's local operator by its port; the real node's replicas from the
    metrics Service's EndpointSlices (both, by pod IP, each labelled with its pod; a not-ready
    endpoint and other ports are left out); both configurations pass promtool."""
    import json
    import shutil
    import subprocess

    from thresher.demo.loop import metrics_targets, scrape_config

    assert scrape_config(9123)["static_configs"] == [{"targets": ["127.0.0.1:9123"]}]
    slices = [{"ports": [{"name": "http-metrics", "port": 9090}, {"name": "other", "port": 1}],
               "endpoints": [
                   {"addresses": ["10.88.3.7"], "conditions": {"ready": True}, "targetRef": {"name": "thresher-b"}},
                   {"addresses": ["10.88.3.5"], "conditions": {"ready": True}, "targetRef": {"name": "thresher-a"}},
                   {"addresses": ["10.88.3.9"], "conditions": {"ready": False}, "targetRef": {"name": "old"}}]},
              {"ports": None, "endpoints": [{"addresses": ["10.88.3.8"]}]}]
    targets = metrics_targets(slices)
    assert targets == [{"targets": ["10.88.3.5:9090"], "labels": {"pod": "thresher-a"}},
                       {"targets": ["10.88.3.7:9090"], "labels": {"pod": "thresher-b"}}]
    (tmp_path / "targets.json").write_text(json.dumps(targets))
    for n, job in enumerate((scrape_config(9123), scrape_config(targets_file=tmp_path / "targets.json"))):
        assert job["job_name"] == "thresher-operator"  # the alert rules' up{job=~".*thresher.*"}
        config = tmp_path / f"prometheus-{n}.yml"
        config.write_text(yaml.safe_dump({"scrape_configs": [job]}))
        checked = subprocess.run([shutil.which("promtool") or "promtool", "check", "config", str(config)],
                                 capture_output=True, text=True)
        assert checked.returncode == 0, checked.stdout + checked.stderr


def test_the_summary_names_the_active_operator_pod_first_and_the_standby():
    from thresher.demo.loop import operator_pod_lines

    def pod(name):
        return {"metadata": {"name": name}, "spec": {"nodeName": REAL_NODE},
                "status": {"phase": "Running", "containerStatuses": [{"imageID": "127.0.0.1:5000/thresher/operator@sha256:ab"}]}}
    lines = operator_pod_lines([pod("thresher-x"), pod("thresher-y")], "thresher-y",
                               {"thresher-x": 0.0, "thresher-y": 1.0})
    assert "thresher-y" in lines[0] and "active (Lease holder); thresher_operator_leader 1;" in lines[0]
    assert "thresher-x" in lines[1] and "standby; thresher_operator_leader 0;" in lines[1]
    assert all(f"Running on {REAL_NODE}" in line and "127.0.0.1:5000/thresher/operator@sha256:ab" in line
               for line in lines)
    assert "thresher_operator_leader ?" in operator_pod_lines([pod("a")], "a", {})[0]


def test_operator_pods_count_as_ready_only_all_running_and_ready():
    from thresher.devcluster.operator_pods import all_ready, holder_instance

    def pod(phase="Running", ready=True, statuses=True):
        return {"status": {"phase": phase, **({"containerStatuses": [{"ready": ready}]} if statuses else {})}}
    assert all_ready([pod(), pod()], 2)
    assert not all_ready([pod()], 2)
    assert not all_ready([pod(), pod(ready=False)], 2)
    assert not all_ready([pod(), pod(phase="Pending", statuses=False)], 2)
    assert holder_instance("thresher-5d9c-abcde_1b2c3d4e") == "thresher-5d9c-abcde" and holder_instance(None) is None
