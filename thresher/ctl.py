"""User commands against a live cluster: ``thresher run|suspend|resume|status``.

They only touch Kubernetes objects (an annotation, ``spec.suspend``, reading status), so the
same can be done with kubectl; nothing talks to the operator directly.
"""

from __future__ import annotations

import json
import sys
from datetime import datetime, timezone

import typer

from thresher.api.names import RUN_NOW_ANNOTATION

NamespaceOpt = typer.Option(None, "--namespace", "-n", help="Namespace; default: the kubeconfig's.")


def _kube():
    from kubernetes import client, config

    from thresher.operator.kube import Kube

    config.load_kube_config()
    return Kube(client.ApiClient())


def _namespace(namespace: str | None) -> str:
    if namespace:
        return namespace
    from kubernetes import config

    _, context = config.list_kube_config_contexts()
    return context["context"].get("namespace") or "default"


def _require(kube, namespace: str, name: str) -> dict:
    body = kube.get_schedule(namespace, name)
    if body is None:
        typer.echo(f"error: collectionschedule {namespace}/{name} not found", err=True)
        raise typer.Exit(1)
    return body


def run(name: str, namespace: str = NamespaceOpt):
    """Start a run now (sets the thresher.dev/run-now annotation; the operator creates the Job)."""
    kube, ns = _kube(), _namespace(namespace)
    _require(kube, ns, name)
    token = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    kube.patch_schedule(ns, name, {"metadata": {"annotations": {RUN_NOW_ANNOTATION: token}}})
    typer.echo(f"collectionschedule {ns}/{name}: run requested ({token})")


def suspend(name: str, namespace: str = NamespaceOpt):
    """Pause: no new runs until resumed (running ones continue)."""
    _set_suspend(name, namespace, True)


def resume(name: str, namespace: str = NamespaceOpt):
    """Resume a paused schedule."""
    _set_suspend(name, namespace, False)


def _set_suspend(name: str, namespace: str | None, value: bool) -> None:
    kube, ns = _kube(), _namespace(namespace)
    _require(kube, ns, name)
    kube.patch_schedule(ns, name, {"spec": {"suspend": value}})
    typer.echo(f"collectionschedule {ns}/{name} {'suspended' if value else 'resumed'}")


def dashboard_rows(schedules: list[dict]) -> list[dict]:
    """One row per schedule: what the old in-process schedulers' console dashboard showed."""
    rows = []
    for body in sorted(schedules, key=lambda b: (b["metadata"]["namespace"], b["metadata"]["name"])):
        spec, status = body.get("spec") or {}, body.get("status") or {}
        stats = status.get("stats") or {}
        conditions = {c["type"]: c for c in status.get("conditions") or []}
        failures = [r for r in status.get("recentRuns") or [] if r.get("outcome") != "Succeeded"]
        ready = conditions.get("Ready", {})
        rows.append({
            "namespace": body["metadata"]["namespace"],
            "name": body["metadata"]["name"],
            "job": next(iter((spec.get("job") or {}).keys()), "?"),
            "schedule": status.get("effectiveSchedule") or spec.get("schedule"),
            "timeZone": spec.get("timeZone") or "UTC",
            "suspended": bool(spec.get("suspend")),
            "ready": ready.get("status") == "True",
            "readyMessage": ready.get("message", ""),
            "stale": conditions.get("Stale", {}).get("status") == "True",
            "nextRun": status.get("nextScheduleTime"),
            "lastResult": status.get("lastResult"),
            "lastSuccess": status.get("lastSuccessfulTime"),
            "consecutiveFailures": status.get("consecutiveFailures", 0),
            "runs": stats.get("runs", 0),
            "successRate": stats.get("successRate"),
            "meanDurationSeconds": stats.get("meanDurationSeconds"),
            "lastRunResult": ((status.get("recentRuns") or [{}])[-1]).get("result"),
            "recentFailures": [{"job": r["jobName"], "at": r.get("completionTime"),
                                "message": r.get("message", "")} for r in failures[-3:]],
        })
    return rows


def status(namespace: str = NamespaceOpt,
           all_namespaces: bool = typer.Option(False, "--all-namespaces", "-A"),
           output: str = typer.Option("table", "-o", "--output", help="table or json")):
    """Every schedule: next run, last result, success rate, mean duration, recent failures."""
    kube = _kube()
    schedules = kube.list_schedules(None if all_namespaces else _namespace(namespace))
    rows = dashboard_rows(schedules)
    if output == "json":
        typer.echo(json.dumps(rows, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title="Thresher schedules")
    for col in ("namespace", "name", "job", "schedule", "next run", "last result", "success",
                "mean", "fails", "items", "state"):
        table.add_column(col)
    for r in rows:
        state = "suspended" if r["suspended"] else ("not ready" if not r["ready"] else
                                                     "stale" if r["stale"] else "ok")
        result = r["lastRunResult"] or {}
        table.add_row(
            r["namespace"], r["name"], r["job"], f"{r['schedule']} {r['timeZone']}",
            r["nextRun"] or "-", r["lastResult"] or "-",
            f"{r['successRate']:.0%} of {r['runs']}" if r["successRate"] is not None else "-",
            f"{r['meanDurationSeconds']:.1f}s" if r["meanDurationSeconds"] is not None else "-",
            str(r["consecutiveFailures"]),
            str(result.get("items", "-")), state)
    # Piped output (grep, tests) gets full rows instead of 80-column wrapping.
    console = Console(width=None if sys.stdout.isatty() else 240)
    console.print(table)
    for r in rows:
        if not r["ready"] and r["readyMessage"]:
            console.print(f"[red]{r['namespace']}/{r['name']} not ready:[/red] {r['readyMessage']}")
        for f in r["recentFailures"]:
            console.print(f"[yellow]{r['namespace']}/{r['name']}[/yellow] {f['job']} at {f['at']}: {f['message']}")
