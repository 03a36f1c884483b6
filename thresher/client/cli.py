"""``thresher run|suspend|resume|status``: thin commands (connect, call, print).

Output meant for programs (``-o json|yaml``, the Job name of ``run``) goes to stdout; every
notice goes to stderr, so ``$(thresher run X)`` and ``thresher status -o json | jq`` stay clean.
"""

from __future__ import annotations

import contextlib
import enum
import json
import sys
import time
from datetime import datetime, timezone
from typing import Iterator, Optional

import typer

from thresher.client import views
from thresher.client.cluster import ClusterError, Connection, connect, errors

app = typer.Typer()

NamespaceOpt = typer.Option(None, "--namespace", "-n", help="Namespace; default: the kubeconfig's.")
# How long `run` waits for the operator to create the Job: it reacts to the annotation within
# seconds; longer means it is not running or cannot build the Job (the Ready condition says why).
CREATE_TIMEOUT_SECONDS = 30.0


class Output(str, enum.Enum):
    table = "table"
    json = "json"
    yaml = "yaml"


@contextlib.contextmanager
def _cluster(namespace: str | None) -> Iterator[tuple[Connection, str]]:
    """Connect; any cluster problem ends the command with one line on stderr and exit 1."""
    try:
        conn = connect()
        with errors(conn.host):
            yield conn, namespace or conn.namespace
    except ClusterError as err:
        _fail(str(err))


def _fail(line: str) -> None:
    typer.echo(f"error: {line}", err=True)
    raise typer.Exit(1)


def _require(conn: Connection, namespace: str, name: str) -> dict:
    body = conn.kube.get_schedule(namespace, name)
    if body is None:
        _fail(f"collectionschedule {namespace}/{name} not found (kubectl get csched -n {namespace} lists them)")
    return body


def _poll(read, until, timeout: float | None, interval: float):
    """Call ``read`` until ``until(value)``; the last value (which may not satisfy it) at the timeout."""
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        value = read()
        if until(value) or (deadline is not None and time.monotonic() >= deadline):
            return value
        time.sleep(interval)


@app.command()
def run(
    name: str,
    namespace: Optional[str] = NamespaceOpt,
    wait: bool = typer.Option(False, "--wait", help="Follow the run to its end; exit 1 unless it succeeded."),
    timeout: Optional[float] = typer.Option(None, "--timeout", min=1,
                                            help="With --wait: give up (exit 1) after this many seconds."),
    interval: float = typer.Option(2.0, "--interval", min=0.1, hidden=True, help="Seconds between polls."),
    at: Optional[str] = typer.Option(None, "--at", help="Instead of now: one run at this RFC 3339 time with an "
                                     "offset, on a whole minute (sets spec.runAt); prints the Job it will have."),
):
    """Start a run now and print its Job (the operator creates it from the thresher.dev/run-now annotation)."""
    from thresher.api.names import RUN_NOW_ANNOTATION
    from thresher.operator.builders import manual_job_name

    if at is not None:
        if wait:
            _fail("--wait follows a run started now; with --at, follow it later with thresher status")
        _run_at(name, namespace, at)
        return
    with _cluster(namespace) as (conn, ns):
        body = _require(conn, ns, name)
        token = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        conn.kube.patch_schedule(ns, name, {"metadata": {"annotations": {RUN_NOW_ANNOTATION: token}}})
        typer.echo(f"collectionschedule {ns}/{name}: run requested ({token})", err=True)
        cronjob = ((body.get("status") or {}).get("cronJobRef") or {}).get("name") or name
        job_name = manual_job_name(cronjob, token)
        job = _poll(lambda: conn.get_job(ns, job_name), lambda j: j is not None, CREATE_TIMEOUT_SECONDS, interval)
        if job is None:
            ready = next((c for c in (conn.kube.get_schedule(ns, name) or {}).get("status", {}).get("conditions")
                          or [] if c.get("type") == "Ready"), {})
            why = f" (Ready={ready.get('status')}: {ready.get('message')})" if ready.get("status") == "False" else ""
            _fail(f"no Job {job_name} after {CREATE_TIMEOUT_SECONDS:.0f}s{why}: is the operator running? "
                  f"(kubectl get csched {name} -n {ns} -o yaml)")
        typer.echo(f"job.batch/{job_name}")
        if wait:
            _follow(conn, ns, name, job_name, timeout, interval)


@app.command()
def backfill(
    name: str,
    start: str = typer.Option(..., "--from", help="Start of the window, RFC 3339 with an offset (included)."),
    end: str = typer.Option(..., "--to", help="End of the window, RFC 3339 with an offset (excluded)."),
    namespace: Optional[str] = NamespaceOpt,
    interval: float = typer.Option(1.0, "--interval", min=0.1, hidden=True, help="Seconds between polls."),
):
    """Run every fire time of [--from, --to) once, each with its logical time (THRESHER_LOGICAL_TIME);
    prints the window's Jobs. Runs that exist already are not created again."""
    from thresher.api.backfill import BackfillError, plan_for_spec, request_value
    from thresher.api.names import BACKFILL_ANNOTATION, SCHEDULE_LABEL
    from thresher.api.runnames import parse_instant
    from thresher.api.schedule import SpecInvalid, parse_schedule

    try:
        window = parse_instant(start, "--from"), parse_instant(end, "--to")
    except ValueError as err:
        _fail(str(err))
    with _cluster(namespace) as (conn, ns):
        body = _require(conn, ns, name)
        parsed = parse_schedule(body)
        if isinstance(parsed, SpecInvalid):
            _fail(f"collectionschedule {ns}/{name} is invalid: {parsed.message}")
        existing = {j["metadata"]["name"] for j in conn.kube.list_jobs(ns, f"{SCHEDULE_LABEL}={name}")}
        existing |= parsed.status.run_jobs() if parsed.status else set()
        now = datetime.now(timezone.utc)
        try:  # refused here at once, with the reason, rather than as an Event later
            plan = plan_for_spec(parsed.spec, ns, name, *window, now, existing,
                                 parsed.status.backfilled_windows() if parsed.status else [])
        except BackfillError as err:
            _fail(str(err))
        if plan.new:
            token = now.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
            conn.kube.patch_schedule(ns, name, {"metadata": {"annotations": {
                BACKFILL_ANNOTATION: request_value(*window, token)}}})
            wanted = {r.job_name for r in plan.new}

            def created() -> set[str]:  # a finished Job may be gone already (history limits), recorded
                recorded = {r.get("jobName") for r in ((conn.kube.get_schedule(ns, name) or {}).get("status") or {})
                            .get("recentRuns") or []}
                return recorded | {j["metadata"]["name"] for j in conn.kube.list_jobs(ns, f"{SCHEDULE_LABEL}={name}")}

            seen = _poll(created, lambda names: wanted <= names, CREATE_TIMEOUT_SECONDS, interval)
            if not wanted <= seen:
                _fail(f"{len(wanted - seen)} of {len(wanted)} backfill Jobs missing after "
                      f"{CREATE_TIMEOUT_SECONDS:.0f}s: is the operator running? (kubectl get events -n {ns})")
        typer.echo(f"collectionschedule {ns}/{name}: {len(plan.runs)} run(s) in the window, {len(plan.new)} new",
                   err=True)
        for run in plan.runs:
            typer.echo(f"job.batch/{run.job_name}")


def _run_at(name: str, namespace: str | None, at: str) -> None:
    """``thresher run NAME --at TIME``: validated here (CEL has no clock), then spec.runAt."""
    from thresher.api.oneoff import parse_run_at, validate_run_at
    from thresher.api.runnames import format_logical_time, scheduled_job_name

    try:
        run_at = parse_run_at(at)
    except ValueError as err:
        _fail(str(err))
    with _cluster(namespace) as (conn, ns):
        body = _require(conn, ns, name)
        problem = validate_run_at(run_at, datetime.now(timezone.utc),
                                  (body.get("spec") or {}).get("startingDeadlineSeconds"))
        if problem is not None:
            _fail(problem)
        conn.kube.patch_schedule(ns, name, {"spec": {"runAt": format_logical_time(run_at)}})
        typer.echo(f"collectionschedule {ns}/{name}: one run at {format_logical_time(run_at)}", err=True)
        typer.echo(f"job.batch/{scheduled_job_name(name, run_at)}")


def _follow(conn: Connection, ns: str, name: str, job_name: str, timeout: float | None, interval: float) -> None:
    said: list[str | None] = [None]

    def read() -> dict | None:
        schedule = conn.kube.get_schedule(ns, name)
        if schedule is None:
            _fail(f"collectionschedule {ns}/{name} was deleted while waiting")
        retrying = views.retrying_run(schedule, job_name)
        line = views.retry_line(retrying) if retrying else views.progress_line(views.active_run(schedule, job_name))
        if line and line != said[0]:
            typer.echo(line, err=True)
            said[0] = line
        return views.recorded_run(schedule, job_name)

    recorded = _poll(read, lambda r: r is not None, timeout, interval)
    if recorded is None:
        _fail(f"job.batch/{job_name} not finished after {timeout:g}s; follow it with "
              f"kubectl get job {job_name} -n {ns} -w")
    outcome = views.wait_outcome(recorded)
    typer.echo(outcome.line)
    raise typer.Exit(outcome.exit_code)


@app.command()
def suspend(name: str, namespace: Optional[str] = NamespaceOpt):
    """Pause: no new runs until resumed (running ones continue)."""
    _set_suspend(name, namespace, True)


@app.command()
def resume(name: str, namespace: Optional[str] = NamespaceOpt):
    """Resume a paused schedule."""
    _set_suspend(name, namespace, False)


def _set_suspend(name: str, namespace: str | None, value: bool) -> None:
    with _cluster(namespace) as (conn, ns):
        _require(conn, ns, name)
        conn.kube.patch_schedule(ns, name, {"spec": {"suspend": value}})
        typer.echo(f"collectionschedule {ns}/{name} {'suspended' if value else 'resumed'}")


@app.command()
def status(namespace: Optional[str] = NamespaceOpt,
           all_namespaces: bool = typer.Option(False, "--all-namespaces", "-A"),
           output: Output = typer.Option(Output.table, "-o", "--output", case_sensitive=False)):
    """Every schedule: next run, last result, success rate, mean duration, active and blocked runs, recent failures."""
    with _cluster(namespace) as (conn, ns):
        rows = views.dashboard_rows(conn.kube.list_schedules(None if all_namespaces else ns))
    if output is Output.json:
        typer.echo(json.dumps(rows, indent=2))
    elif output is Output.yaml:
        import yaml

        typer.echo(yaml.safe_dump(rows, sort_keys=False), nl=False)
    else:
        _print_table(rows)


def _print_table(rows: list[dict]) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    table = Table(title="Thresher schedules")
    for col in ("namespace", "name", "job", "schedule", "next run", "last result", "success",
                "mean", "fails", "items", "state"):
        table.add_column(col)
    for r in rows:
        result = r["lastRunResult"] or {}
        table.add_row(
            r["namespace"], r["name"], r["job"], f"{r['schedule']} {r['timeZone']}",
            r["nextRun"] or "-", r["lastResult"] or "-",
            f"{r['successRate']:.0%} of {r['runs']}" if r["successRate"] is not None else "-",
            f"{r['meanDurationSeconds']:.1f}s" if r["meanDurationSeconds"] is not None else "-",
            str(r["consecutiveFailures"]),
            str(result.get("items", "-")), views.state_of(r))
    # Piped output (grep, tests) gets full rows instead of 80-column wrapping.
    console = Console(width=None if sys.stdout.isatty() else 240)
    console.print(table)
    for r in rows:
        where = f"{r['namespace']}/{r['name']}"
        if not r["ready"] and r["readyMessage"]:
            console.print(f"[red]{where} not ready:[/red] {escape(r['readyMessage'])}")
        for a in r["active"]:
            if a.get("phase") == "Blocked":
                console.print(f"[red]{where}[/red] {escape(views.progress_line(a) or '')}")
        for line in r["retrying"]:
            console.print(f"[yellow]{where}[/yellow] {escape(line)}")
        for f in r["recentFailures"]:
            console.print(f"[yellow]{where}[/yellow] {f['job']} at {f['at']}: {escape(f['message'])}")
