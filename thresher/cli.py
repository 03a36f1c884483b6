"""The ``thresher`` command.

Sub-commands import what they need lazily, so that ``thresher job ...`` inside a
job image does not load the operator, and ``thresher --help`` is instant.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from thresher import ctl
from thresher.devcluster.cli import app as dev_app
from thresher.jobs.drone.cli import app as drone_app
from thresher.jobs.tmdb.cli import app as tmdb_app
from thresher.operator.cli import app as operator_app

app = typer.Typer(help="Thresher: scheduled data collection and processing on Kubernetes.",
                  no_args_is_help=True)
job_app = typer.Typer(help="Run a job payload (what a CollectionSchedule's pods run).", no_args_is_help=True)
job_app.add_typer(tmdb_app, name="tmdb")
job_app.add_typer(drone_app, name="drone")
app.add_typer(job_app, name="job")
app.add_typer(dev_app, name="dev")
app.add_typer(operator_app, name="operator")
for command in (ctl.run, ctl.suspend, ctl.resume, ctl.status):
    app.command()(command)

@app.command()
def demo(
    down: bool = typer.Option(False, "--down", help="Stop the demo and remove its state."),
    node: Optional[bool] = typer.Option(
        None, "--node/--no-node",
        help="Run the jobs as real containers on a local kubelet node (needs root, containerd, runc, CNI, "
             "buildah). Default: when this machine can; otherwise every pod is simulated by kwok."),
):
    """Local control plane + operator + example schedules, each run once (what `make demo` runs)."""
    from thresher.demo import run_demo

    run_demo(down=down, node=node)


crd_app = typer.Typer(help="The CollectionSchedule CRD, generated from the pydantic models.", no_args_is_help=True)
app.add_typer(crd_app, name="crd")


@crd_app.command("generate")
def crd_generate(
    check: bool = typer.Option(False, "--check", help="Write nothing; exit 1 with a diff if the files are stale."),
    root: Path = typer.Option(Path("."), "--root", help="Repository root the CRD paths are relative to."),
) -> None:
    """Write manifests/crds/ and charts/thresher/crds/ from thresher/api/schedule.py."""
    from thresher.api import crd

    if check:
        diff = crd.check(root)
        if diff:
            typer.echo(diff, nl=False)
            typer.echo("CRD files are out of date: run `thresher crd generate`.", err=True)
            raise typer.Exit(1)
        typer.echo("CRD files are up to date.")
        return
    for path in crd.write(root):
        typer.echo(f"wrote {path}")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
