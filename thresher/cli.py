"""The ``thresher`` command: mounts the command groups, each defined beside the code it drives.

| command | module |
| --- | --- |
| ``run``, ``suspend``, ``resume``, ``status`` | ``thresher/client/cli.py`` (users against a cluster) |
| ``job tmdb``, ``job drone`` | ``thresher/jobs/*/cli.py`` (the job payloads) |
| ``operator run`` | ``thresher/operator/cli.py`` |
| ``dev`` | ``thresher/devcluster/cli.py`` (the local control plane); absent in the images |
| ``crd`` | ``thresher/api/cli.py`` |
| ``demo`` (and ``demo fake-tmdb``, ``demo sample-fields``) | ``thresher/demo/cli.py``; absent in the images |

The lazy-import promise: these modules import only typer (and pydantic) at the top; every
command imports what it needs when it runs, so ``thresher job ...`` inside a job image does
not load the operator, and ``thresher --help`` loads neither kopf, kubernetes, numpy nor torch
(tests/unit/test_cli.py checks ``sys.modules``). ``main`` is the one error boundary: a missing
optional extra or a job's configuration error is one line on stderr, not a traceback.
"""

from __future__ import annotations

import sys

import typer

from thresher.api.cli import app as crd_app
from thresher.client.cli import app as client_app
from thresher.jobs.drone.cli import app as drone_app
from thresher.jobs.tmdb.cli import app as tmdb_app
from thresher.operator.cli import app as operator_app

app = typer.Typer(help="Thresher: scheduled data collection and processing on Kubernetes.",
                  no_args_is_help=True)
job_app = typer.Typer(help="Run a job payload (what a CollectionSchedule's pods run).", no_args_is_help=True)
job_app.add_typer(tmdb_app, name="tmdb")
job_app.add_typer(drone_app, name="drone")
app.add_typer(client_app)  # no name: run, suspend, resume and status are top-level commands
app.add_typer(job_app, name="job")
app.add_typer(operator_app, name="operator")
app.add_typer(crd_app, name="crd")


def _dev_app():
    from thresher.devcluster.cli import app as dev_app

    return dev_app


def _demo_app():
    from thresher.demo.cli import app as demo_app

    return demo_app


def _host_only(load, package: str):
    """The command group ``load`` returns, or None where its package is absent: the dev cluster
    and the demo ship in the wheel, not in the operator and job images (.dockerignore; they run
    on the host)."""
    try:
        return load()
    except ModuleNotFoundError as err:
        if err.name not in (package, f"{package}.cli"):
            raise
        return None


for _name, _load, _package in (("dev", _dev_app, "thresher.devcluster"), ("demo", _demo_app, "thresher.demo")):
    if (_group := _host_only(_load, _package)) is not None:
        app.add_typer(_group, name=_name)


# Top-level modules of the optional extras, and the extra that brings each.
EXTRAS = {"kopf": "operator", "kubernetes": "operator", "prometheus_client": "operator", "aiohttp": "operator",
          "numpy": "jobs", "PIL": "jobs", "tifffile": "jobs", "av": "jobs", "watchdog": "jobs",
          "torch": "gpu", "torchvision": "gpu"}


def missing_extra(err: ModuleNotFoundError) -> str | None:
    """The one line for a module of an extra that is not installed; None for any other."""
    module = (err.name or "").split(".")[0]
    extra = EXTRAS.get(module)
    if extra is None:
        return None
    return f"{module} is not installed; this command needs the {extra} extra: pip install 'thresher[{extra}]'"


def main(argv: list[str] | None = None) -> None:
    from thresher.jobs.harness import JobError

    try:
        app(args=argv)
    except ModuleNotFoundError as err:
        line = missing_extra(err)
        if line is None:
            raise
        print(f"error: {line}", file=sys.stderr)
        sys.exit(1)
    except JobError as err:  # raised before a job could report it itself (e.g. --log-level FOO)
        print(f"error: {err}", file=sys.stderr)
        sys.exit(int(err.exit_code))


if __name__ == "__main__":
    main()
