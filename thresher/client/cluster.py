"""The user commands' connection to a cluster, and its errors as one line each.

Everything here imports the Kubernetes client lazily: ``thresher --help`` and the job payloads
must not load it (and it is only installed with the ``operator`` extra).
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from typing import Any, Iterator

KUBECONFIG_HINT = 'set KUBECONFIG or create ~/.kube/config (local cluster: eval "$(thresher dev env)")'


class ClusterError(Exception):
    """A cluster problem the user can act on; its text is the one line to print."""


@dataclass
class Connection:
    kube: Any  # thresher.operator.kube.Kube: the same thin adapter the operator uses
    namespace: str  # the kubeconfig context's namespace, or "default"
    host: str

    def get_job(self, namespace: str, name: str) -> dict | None:
        import json

        from kubernetes.client.rest import ApiException

        try:
            return json.loads(self.kube.batch.read_namespaced_job(name, namespace, _preload_content=False).data)
        except ApiException as err:
            if err.status == 404:
                return None
            raise


def connect() -> Connection:
    """Load the kubeconfig (``$KUBECONFIG`` or ~/.kube/config) and build the client."""
    # Without the operator extra this import fails; thresher.cli.main says which extra to install.
    from kubernetes import client, config

    from thresher.operator.kube import Kube

    with errors():
        config.load_kube_config()
        _, context = config.list_kube_config_contexts()
    api = client.ApiClient()
    return Connection(Kube(api), (context.get("context") or {}).get("namespace") or "default",
                      api.configuration.host)


def explain(err: BaseException, host: str = "the API server") -> str | None:
    """One line for an error the Kubernetes client raises; None for anything else (a bug)."""
    from kubernetes.client.rest import ApiException
    from kubernetes.config.config_exception import ConfigException
    from urllib3.exceptions import HTTPError as Urllib3Error
    from urllib3.exceptions import MaxRetryError

    if isinstance(err, ConfigException):
        text = str(err).strip().rstrip(".")
        where = f"KUBECONFIG={os.environ['KUBECONFIG']}" if os.environ.get("KUBECONFIG") else "~/.kube/config"
        return f"no usable kubeconfig at {where} ({text}): {KUBECONFIG_HINT}"
    if isinstance(err, FileNotFoundError) and err.filename:
        return f"kubeconfig {err.filename} does not exist: {KUBECONFIG_HINT}"
    if isinstance(err, MaxRetryError):
        reason = err.reason
        cause = (getattr(reason, "__cause__", None) or reason)
        detail = str(cause).split(": ", 1)[-1] if cause else "no response"
        return (f"cannot reach {host}: {detail}; is the cluster up? "
                f"(`kubectl cluster-info` checks the same kubeconfig)")
    if isinstance(err, Urllib3Error):
        return f"cannot talk to {host}: {err}; is the cluster up?"
    if isinstance(err, ApiException):
        return _api_error(err)
    return None


def _api_error(err) -> str:
    if err.status in (401, 403):
        return (f"the API server refused the request ({err.status} {err.reason}): the kubeconfig's user "
                f"needs get/list/patch on collectionschedules.thresher.dev (see docs/security.md)")
    # The commands read Jobs and schedules by name themselves (None on 404): a 404 that gets
    # here is a list or patch of a resource type the server does not serve.
    if err.status == 404:
        return ("the API server does not know collectionschedules.thresher.dev: install the CRD "
                "(helm install thresher, or kubectl apply -f manifests/crds/)")
    return f"the API server answered {err.status} {err.reason}"


@contextlib.contextmanager
def errors(host: str = "the API server") -> Iterator[None]:
    """Turn the client's exceptions into ``ClusterError`` with one actionable line."""
    try:
        yield
    except ClusterError:
        raise
    except Exception as err:
        line = explain(err, host)
        if line is None:
            raise
        raise ClusterError(line) from None
