"""``thresher crd ...``: the CollectionSchedule CRD, generated from the models in this package."""

from __future__ import annotations

from pathlib import Path

import typer

app = typer.Typer(help="The CollectionSchedule CRD, generated from the pydantic models.", no_args_is_help=True)


@app.command("generate")
def generate(
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
