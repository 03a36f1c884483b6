"""``thresher dev ...``: the local control plane."""

from __future__ import annotations

import json

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


@app.command()
def env(state_dir: str = StateDir):
    """Print the shell line that points kubectl at this cluster: eval "$(thresher dev env)"."""
    typer.echo(_cluster(state_dir).env_line())
