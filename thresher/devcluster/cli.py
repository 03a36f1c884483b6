"""``thresher dev ...``: the local control plane."""

from __future__ import annotations

import json
from typing import Optional

import typer

app = typer.Typer(help="Run a local Kubernetes control plane (etcd, apiserver, controllers, kwok nodes).",
                  no_args_is_help=True)

StateDir = typer.Option(None, "--state-dir", envvar="THRESHER_STATE_DIR",
                        help="Where the cluster keeps PKI, data, logs and kubeconfig.")


def _cluster(state_dir, node: bool | None = None):
    from thresher.devcluster.cluster import DevCluster

    return DevCluster(state_dir, node=node)


@app.command()
def up(state_dir: str = StateDir, timeout: float = typer.Option(120, help="Seconds to wait for readiness."),
       node: bool = typer.Option(False, "--node", envvar="THRESHER_DEV_NODE",
                                 help="Also run a real node (kubelet + containerd + CNI) named "
                                      "thresher-local; needs root. See docs/devcluster.md.")):
    """Start the control plane (building binaries once if needed) and wait until nodes are Ready."""
    from thresher.devcluster.binaries import BuildError
    from thresher.devcluster.cluster import ClusterError

    try:
        _cluster(state_dir, node=node or None).up(log=lambda m: typer.echo(m, err=True), timeout=timeout)
    except (BuildError, ClusterError) as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(1)


@app.command()
def down(state_dir: str = StateDir):
    """Stop every process this cluster started and delete its state directory."""
    _cluster(state_dir).down(log=lambda m: typer.echo(m, err=True))


@app.command()
def status(state_dir: str = StateDir, output: str = typer.Option("table", "-o", "--output",
                                                                  help="table or json")):
    """Show each component's process and memory, and node readiness. Exit 1 if anything is down."""
    cluster = _cluster(state_dir)
    states = cluster.components()
    nodes = cluster.node_readiness() if states["kube-apiserver"].running else {}
    healthy = all(s.running for s in states.values()) and bool(nodes) and all(nodes.values())
    if output == "json":
        typer.echo(json.dumps({
            "stateDir": str(cluster.state_dir), "healthy": healthy,
            "components": {n: {"pid": s.pid, "running": s.running, "rssBytes": s.rss_bytes}
                           for n, s in states.items()},
            "nodes": nodes,
        }, indent=2))
    else:
        from rich.console import Console
        from rich.table import Table

        table = Table(title=f"thresher dev cluster ({cluster.state_dir})")
        for col in ("component", "pid", "state", "memory"):
            table.add_column(col)
        for s in states.values():
            table.add_row(s.name, str(s.pid or "-"), "running" if s.running else "stopped",
                          f"{s.rss_bytes / 2**20:.0f} MiB" if s.running else "-")
        table.add_row("total", "", "", f"{sum(s.rss_bytes for s in states.values()) / 2**20:.0f} MiB")
        console = Console()
        console.print(table)
        for node, ready in sorted(nodes.items()):
            console.print(f"node {node}: {'Ready' if ready else 'NotReady'}")
    if not healthy:
        raise typer.Exit(1)


def _notice(message: str) -> None:
    typer.echo(message, err=True)


@app.command()
def env(state_dir: str = StateDir):
    """Print the shell line that points kubectl at this cluster: eval "$(thresher dev env)"."""
    cluster = _cluster(state_dir)
    # Only the export line goes to stdout (it is eval'ed); notices such as "ignoring kubectl
    # from PATH (wrong version)" go to stderr.
    cluster.binaries(log=_notice)
    typer.echo(cluster.env_line())


@app.command()
def images(
    names: Optional[list[str]] = typer.Argument(None, help="pause, base, jobs, operator (default: pause jobs operator)."),
    push_to: Optional[str] = typer.Option(None, "--push-to", metavar="STATE_DIR",
                                          help="Also push the images to the registry of this cluster's real node."),
):
    """Build the real node's images with buildah (cached OCI archives) and push them to the dev
    registry, printing each digest; see docs/devcluster.md."""
    from pathlib import Path

    from thresher.devcluster import images as node_images
    from thresher.devcluster.registry import Registry

    try:
        archives = node_images.build(names or ["pause", "jobs", "operator"], _notice)
    except node_images.ImageError as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(1)
    if not push_to:
        return
    registry = Registry(Path(push_to))
    if not registry.running():
        _notice(f"no running registry in {push_to}: start it with `thresher dev up --node`, then run this again")
        raise typer.Exit(1)
    targets = [n for n in (names or ["jobs", "operator"]) if n in node_images.REPOSITORIES]
    try:
        for target in targets:
            pushed = node_images.push(target, node_images.archive_path(target), registry.address, "dev", _notice,
                                      authfile=registry.auth_file, cert_dir=registry.cert_dir)
            typer.echo(pushed.reference)
    except node_images.ImageError as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(1)


@app.command()
def release(
    registry: str = typer.Option(..., "--registry", envvar="REGISTRY",
                                 help="Where to publish: host[:port][/path], e.g. ghcr.io/acme."),
    version: str = typer.Option(..., "--version", envvar="VERSION", help="SemVer: image tag, chart version."),
    image: list[str] = typer.Option(list(("operator", "jobs", "jobs-gpu")), "--image",
                                    help="Images to build and push (repeatable)."),
    authfile: Optional[str] = typer.Option(None, help="Registry credentials (default: your skopeo/buildah login)."),
    cert_dir: Optional[str] = typer.Option(None, help="Folder with the registry's CA (ca.crt), if private."),
    ca_file: Optional[str] = typer.Option(None, help="The registry's CA for helm, if private."),
    registry_config: Optional[str] = typer.Option(None, help="helm's registry config (default: your helm registry login)."),
    output: str = typer.Option("text", "-o", "--output", help="text or json."),
):
    """Build every image and the chart, push them to REGISTRY and print references and digests
    (`make release REGISTRY=... VERSION=...`). Log in beforehand."""
    from pathlib import Path

    from thresher.devcluster import release as publish
    from thresher.devcluster.binaries import BuildError, ensure
    from thresher.devcluster.images import ImageError

    as_path = lambda p: Path(p) if p else None  # noqa: E731
    try:
        publish.check_request(registry, version, image)
        result = publish.release(registry, version, image, _notice, helm=ensure(["helm"], _notice)["helm"],
                                 authfile=as_path(authfile), cert_dir=as_path(cert_dir), ca_file=as_path(ca_file),
                                 registry_config=as_path(registry_config))
    except (publish.ReleaseError, ImageError, BuildError) as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(1)
    summary = result.summary()
    if output == "json":
        typer.echo(json.dumps(summary, indent=2))
        return
    for target, info in summary["images"].items():
        typer.echo(f"{target:9} {info['reference']}")
    typer.echo(f"{'chart':9} {summary['chart']['reference']}:{version} {summary['chart']['digest']}")
    typer.echo(f"install:  {summary['install']}")
