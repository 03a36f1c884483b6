"""``thresher operator run``: the operator process (what the Helm chart's Deployment runs)."""

from __future__ import annotations

import os

import typer

app = typer.Typer(help="Run the Thresher operator.", no_args_is_help=True)

# kopf's connections when watching cluster-wide: its 3 watch streams (schedules, Jobs, CronJobs)
# hold one each; the rest carry its PATCHes (diff base, finalizers) and Events.
KOPF_CONNECTIONS = 32


@app.command()
def run(
    namespace: list[str] = typer.Option([], "--namespace", "-n",
                                        help="Watch only these namespaces (repeatable; globs like t-* allowed)."),
    all_namespaces: bool = typer.Option(False, "--all-namespaces", "-A",
                                        help="Watch the whole cluster (the default without --namespace)."),
    metrics_port: int = typer.Option(9090, help="Port of the Prometheus /metrics endpoint (0: off)."),
    liveness_port: int = typer.Option(8080, help="Port of kopf's /healthz liveness endpoint."),
    job_image: str = typer.Option("thresher-jobs:0.1.0", envvar="THRESHER_JOB_IMAGE",
                                  help="Image of Thresher's CPU jobs."),
    job_gpu_image: str = typer.Option("thresher-jobs-gpu:0.1.0", envvar="THRESHER_JOB_GPU_IMAGE",
                                      help="Image of Thresher's GPU jobs."),
    job_image_pull_secrets: str = typer.Option(
        "", envvar="THRESHER_JOB_IMAGE_PULL_SECRETS",
        help="Comma-separated Secret names every run's pod pulls its image with (in the schedule's namespace)."),
    kubeconfig: str = typer.Option(None, envvar="KUBECONFIG",
                                   help="Kubeconfig; unset inside a cluster: the pod's ServiceAccount."),
    log_format: str = typer.Option("json", help="json or plain."),
    watch_timeout: float = typer.Option(
        300, envvar="THRESHER_WATCH_TIMEOUT", min=1,
        help="Seconds after which the API server ends each watch stream and it is reopened."),
    workers: int = typer.Option(16, envvar="THRESHER_WORKERS", min=1,
                                help="Threads that run handlers (they wait on the API, not the CPU)."),
    unschedulable_grace: float = typer.Option(
        60, "--unschedulable-grace", envvar="THRESHER_UNSCHEDULABLE_GRACE", min=0,
        help="Seconds a run's pod may stay unschedulable (the scheduler retries, an autoscaler may add "
             "a node) before the run counts as blocked."),
    leader_elect: bool = typer.Option(
        False, "--leader-elect/--no-leader-elect",
        help="Run only while holding a coordination.k8s.io Lease (several replicas: one active)."),
    lease_name: str = typer.Option("thresher-operator", "--leader-elect-resource-name",
                                   help="Name of the Lease."),
    lease_namespace: str = typer.Option(None, "--leader-elect-resource-namespace", envvar="POD_NAMESPACE",
                                        help="Namespace of the Lease (the chart: the operator's own)."),
    lease_duration: float = typer.Option(15, "--leader-elect-lease-duration", min=1,
                                         help="Seconds a standby waits after the last renewal it saw."),
    renew_deadline: float = typer.Option(10, "--leader-elect-renew-deadline", min=1,
                                         help="Seconds the leader keeps trying to renew before it exits."),
    retry_period: float = typer.Option(2, "--leader-elect-retry-period", min=0.1,
                                       help="Seconds between attempts to acquire or renew."),
):
    """Reconcile CollectionSchedules into CronJobs and record every run. Stops on SIGTERM."""
    import asyncio
    import logging

    import kopf
    from kubernetes import client, config

    from thresher.logs import configure_logging
    from thresher.operator.activeruns import Grace
    from thresher.operator.builders import JobImages
    from thresher.operator.handlers import register
    from thresher.operator.kube import Kube
    from thresher.operator.metrics import OperatorMetrics
    from thresher.operator.reconciler import Reconciler

    configure_logging("INFO", json_logs=log_format == "json")
    election = None
    if leader_elect:
        election = _election(lease_namespace, lease_duration, renew_deadline, retry_period)
    if kubeconfig:
        config.load_kube_config(config_file=kubeconfig)
    else:
        config.load_incluster_config()
    # Handler threads share one connection pool, sized before the client exists (the ApiClient
    # builds its pool once): a pool smaller than the threads discards connections, and every new
    # one costs a TLS handshake and an OpenSSL context (CPU, and memory that stays in the heap).
    configuration = client.Configuration.get_default_copy()
    configuration.connection_pool_maxsize = max(32, workers)
    api = client.ApiClient(configuration)

    metrics = OperatorMetrics()
    if metrics_port:
        metrics.serve(metrics_port)
    registry = kopf.OperatorRegistry()
    instance = os.environ.get("POD_NAME") or "thresher-operator"
    register(registry, Reconciler(kube=Kube(api, instance=instance), metrics=metrics,
                                  images=JobImages(cpu=job_image, gpu=job_gpu_image,
                                                   pull_secrets=pull_secret_names(job_image_pull_secrets)),
                                  grace=Grace(unschedulable_seconds=unschedulable_grace)),
             watch_timeout=watch_timeout, max_workers=workers)

    @kopf.on.login(registry=registry)
    async def login(**kwargs):
        # Same credentials as the kubernetes client above, whichever way they were loaded.
        info = kopf.login_via_client(**kwargs)
        # kopf's own session has no connection limit: in a storm every PATCH it sends opens a
        # TLS connection of its own, and their buffers stay in the heap after they close. Bound
        # it cluster-wide, where the watch streams are few and known. With --namespace globs
        # every matching namespace adds a stream per resource: no fixed bound is safe there.
        return info if namespace else bounded_session(info, KOPF_CONNECTIONS)

    if namespace and all(not set("*?!,") & set(ns) for ns in namespace):
        @kopf.on.startup(registry=registry)
        def exact_namespaces(settings: kopf.OperatorSettings, **_):
            # Only exact names (the chart's watchNamespaces): kopf need not list namespaces,
            # which the namespace-scoped RBAC does not grant; it would retry that 403 for
            # minutes (ERROR_BACKOFFS) before falling back to these names. Its CRD scan stays
            # (one listing at start-up).
            settings.scanning.disabled = True
    logging.getLogger("kopf").setLevel(logging.INFO)
    if os.environ.get("THRESHER_TRACEMALLOC"):  # opt-in diagnostics, see memdebug.py
        from thresher.operator import memdebug

        memdebug.install(os.environ["THRESHER_TRACEMALLOC"])
    def lead():
        # SIGTERM/SIGINT: kopf stops watching, lets running handlers finish, then returns.
        return kopf.operator(
            registry=registry,
            standalone=True,  # no kopf peering: one replica, or one leader by the Lease
            clusterwide=not namespace,
            namespaces=namespace,
            liveness_endpoint=f"http://0.0.0.0:{liveness_port}/healthz",
        )

    if election is None:
        metrics.set_leader(True)
        asyncio.run(lead())
        return
    from thresher.operator import lease

    # Its own small client: the renewals must not queue behind the handlers' connections.
    timeout = election.config.renew_deadline / 2
    elector = lease.LeaderElector(lease.LeaseLock(client.ApiClient(client.Configuration.get_default_copy()),
                                                  lease_namespace, lease_name, timeout=timeout), election)
    asyncio.run(lease.run_elected(elector, lease.StandbyHealth(elector, liveness_port, timeout), lead,
                                  on_lost=_exit_on_lost_lease, set_leader=metrics.set_leader))


def _election(namespace: str | None, duration: float, deadline: float, retry: float):
    """The election settings, or a one-line error for the user's mistake."""
    import socket
    import uuid

    from thresher.operator.leaderelection import Election, ElectionConfig

    if not namespace:
        raise typer.BadParameter("--leader-elect needs --leader-elect-resource-namespace (or POD_NAMESPACE)",
                                 param_hint="--leader-elect-resource-namespace")
    try:
        config = ElectionConfig(lease_duration=duration, renew_deadline=deadline, retry_period=retry)
    except ValueError as err:
        raise typer.BadParameter(str(err), param_hint="--leader-elect-*") from None
    # client-go's identity: the host (the pod's name) plus a unique part, so a restarted
    # container never mistakes its predecessor's Lease for its own.
    return Election(f"{os.environ.get('POD_NAME') or socket.gethostname()}_{uuid.uuid4().hex[:8]}", config)


def _exit_on_lost_lease() -> None:
    """Leadership lost (renewals failed for the renew deadline): stop handling at once, as
    client-go's users do (klog.Fatal); the pod restarts as a standby."""
    import logging

    logging.getLogger("thresher.operator").error("leader election lost: exiting")
    logging.shutdown()
    os._exit(1)


def pull_secret_names(text: str) -> tuple[str, ...]:
    """``"a, b,,"`` -> ``("a", "b")``: the operator's --job-image-pull-secrets."""
    return tuple(name.strip() for name in text.split(",") if name.strip())


def bounded_session(info, limit: int):
    """kopf's credentials as an aiohttp session with at most ``limit`` connections (kopf's own
    session is unlimited); used through kopf's documented AiohttpSession credentials."""
    import aiohttp
    import kopf

    session = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=limit, ssl=info.as_ssl_context()),
        headers=info.as_http_headers(), proxy=info.proxy_url, trust_env=info.trust_env)
    return kopf.AiohttpSession(aiohttp_session=session, server=info.server, priority=info.priority,
                               default_namespace=info.default_namespace, expiration=info.expiration)
