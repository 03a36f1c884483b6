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


def test_the_charts_deployment_asks_for_kwok_and_passes_the_values_schema(tmp_path):
    """With the real node the kwok CPU nodes are tainted; the chart's operator Deployment (which
    the demo leaves simulated, running the operator as a local process) must ask for kwok, or
    `helm install --wait` waits for a pod the real node cannot run. The values must pass the
    chart's strict schema."""
    import json

    from tests.helpers.tools import require_helm, run_tool
    from thresher.demo.assets import asset
    from thresher.demo.loop import chart_values
    from thresher.devcluster.kwok.nodes import SIMULATED_TAINT

    values = chart_values()
    values_file = tmp_path / "values.json"
    values_file.write_text(json.dumps(values))
    rendered = run_tool([require_helm(), "template", "thresher", str(asset("chart")), "--values", str(values_file)])
    assert rendered.returncode == 0, rendered.stderr  # helm checks values.schema.json (additionalProperties: false)
    (deployment,) = [d for d in yaml.safe_load_all(rendered.stdout) if d and d["kind"] == "Deployment"]
    pod = deployment["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == values["nodeSelector"] and pod["tolerations"] == values["tolerations"]
    (toleration,) = values["tolerations"]
    assert (toleration["key"], toleration["value"], toleration["effect"]) == (
        SIMULATED_TAINT["key"], SIMULATED_TAINT["value"], SIMULATED_TAINT["effect"])
    assert values["nodeSelector"] == {"type": "kwok"}
