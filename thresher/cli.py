"""The ``thresher`` command.

Sub-commands import what they need lazily, so that ``thresher job ...`` inside a
job image does not load the operator, and ``thresher --help`` is instant.
"""

from __future__ import annotations

import typer

from thresher.devcluster.cli import app as dev_app
from thresher.jobs.drone.cli import app as drone_app
from thresher.jobs.tmdb.cli import app as tmdb_app

app = typer.Typer(help="Thresher: scheduled data collection and processing on Kubernetes.",
                  no_args_is_help=True)
job_app = typer.Typer(help="Run a job payload (what a CollectionSchedule's pods run).", no_args_is_help=True)
job_app.add_typer(tmdb_app, name="tmdb")
job_app.add_typer(drone_app, name="drone")
app.add_typer(job_app, name="job")
app.add_typer(dev_app, name="dev")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
