"""kopf's own floor: a bare kopf operator with no-op handlers on the events Thresher watches, so
the scale benchmark can tell kopf's per-event cost from Thresher's.

    python benchmarks/kopf_floor.py --mode event  --liveness-port 8080   # one no-op on.event
    python benchmarks/kopf_floor.py --mode create --liveness-port 8080   # + a no-op on.create

``event``: kopf receives, parses and dispatches each schedule and CronJob event to an async
no-op, with Thresher's diff base (``operator/diffbase.py``): the least kopf costs for these
events. ``create``: also a no-op creation handler and kopf's own annotation diff base, so kopf
writes it per new schedule (a PATCH and one more watch event), as Thresher's operator did
before issue 19. The scale benchmark
runs it with ``--operator-module benchmarks/kopf_floor.py``.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import kopf  # noqa: E402

from thresher.api.names import GROUP, KOPF_PREFIX, MANAGED_BY, MANAGED_BY_VALUE, PLURAL, VERSION  # noqa: E402
from thresher.operator.diffbase import ScheduleDiffBase  # noqa: E402


def registry_for(mode: str, workers: int = 16) -> kopf.OperatorRegistry:
    registry = kopf.OperatorRegistry()

    @kopf.on.startup(registry=registry)
    def configure(settings: kopf.OperatorSettings, **_):
        settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=KOPF_PREFIX)
        # event: Thresher's diff base (kopf still fetches and builds one on every event, of
        # every resource); create: kopf's own, as Thresher had it before issue 19.
        settings.persistence.diffbase_storage = ScheduleDiffBase() if mode == "event" else \
            kopf.AnnotationsDiffBaseStorage(prefix=KOPF_PREFIX, key="last-handled-configuration")
        settings.posting.level = logging.WARNING
        settings.execution.max_workers = workers

    @kopf.on.login(registry=registry)
    def login(**kwargs):  # KUBECONFIG, as Thresher's operator logs in
        from kubernetes import config

        config.load_kube_config()
        return kopf.login_via_client(**kwargs)

    @kopf.on.event(GROUP, VERSION, PLURAL, registry=registry)
    async def schedule_seen(**_):
        pass

    @kopf.on.event("batch", "v1", "cronjobs", labels={MANAGED_BY: MANAGED_BY_VALUE}, registry=registry)
    async def cronjob_seen(**_):
        pass

    if mode == "create":
        @kopf.on.create(GROUP, VERSION, PLURAL, registry=registry)
        async def created(**_):
            pass

    return registry


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mode", choices=("event", "create"), default="event")
    parser.add_argument("--liveness-port", type=int, default=8080)
    parser.add_argument("--metrics-port", type=int, default=0, help="ignored (the benchmark passes it)")
    parser.add_argument("--all-namespaces", action="store_true", help="ignored: always cluster-wide")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    asyncio.run(kopf.operator(registry=registry_for(args.mode), standalone=True, clusterwide=True,
                              liveness_endpoint=f"http://0.0.0.0:{args.liveness_port}/healthz"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
