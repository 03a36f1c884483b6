"""``thresher operator run``: the operator process (what the Helm chart's Deployment runs)."""

from __future__ import annotations

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
):
    """Reconcile CollectionSchedules into CronJobs and record every run. Stops on SIGTERM."""
    import asyncio
    import logging
    import os

    import kopf
    from kubernetes import client, config

    from thresher.logs import configure_logging
    from thresher.operator.builders import JobImages
    from thresher.operator.handlers import register
    from thresher.operator.kube import Kube
    from thresher.operator.metrics import OperatorMetrics
    from thresher.operator.reconciler import Reconciler

    configure_logging("INFO", json_logs=log_format == "json")
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
    register(registry, Reconciler(kube=Kube(api), metrics=metrics,
                                  images=JobImages(cpu=job_image, gpu=job_gpu_image,
                                                   pull_secrets=pull_secret_names(job_image_pull_secrets))),
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

    logging.getLogger("kopf").setLevel(logging.INFO)
    if os.environ.get("THRESHER_TRACEMALLOC"):  # opt-in diagnostics, see memdebug.py
        from thresher.operator import memdebug

        memdebug.install(os.environ["THRESHER_TRACEMALLOC"])
    # SIGTERM/SIGINT: kopf stops watching, lets running handlers finish, then returns.
    asyncio.run(kopf.operator(
        registry=registry,
        standalone=True,  # one replica (Deployment strategy Recreate); no peering objects
        clusterwide=not namespace,
        namespaces=namespace,
        liveness_endpoint=f"http://0.0.0.0:{liveness_port}/healthz",
    ))


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
