"""The dev cluster's OCI registry: Debian's ``docker-registry`` (the CNCF distribution registry,
2.8) as one more supervised process of the real node (``thresher dev up --node``).

* TLS with a serving certificate from the dev CA (``pki``) for ``127.0.0.1`` and ``localhost``;
* htpasswd authentication (bcrypt, the only scheme distribution accepts), written by Apache's
  ``htpasswd -B`` (Debian's apache2-utils, the tool distribution's own documentation uses):
  one user, ``thresher``, with a random password kept in the state directory (mode 0600);
* storage in ``<state>/registry/data``, on a free port of 127.0.0.1 chosen once.

Its clients: skopeo pushes the images (``images.push``), helm pushes and pulls the chart
(``release``), and the node's containerd pulls through ``hosts.toml``, which trusts the dev CA
for this registry and carries no credentials: pods bring them as an ``imagePullSecret``
(``pull_secret``), so a pod without one is refused with the registry's 401. Everything is
under the state directory: ``down`` leaves nothing behind.
"""

from __future__ import annotations

import base64
import json
import secrets
import shutil
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import yaml

from thresher.devcluster import pki
from thresher.devcluster.process import Log, Supervisor, free_port

PROCESS = "registry"
USER = "thresher"
BINARY = "docker-registry"
# The name of the pull Secret the demo and the tests create in each namespace that pulls.
PULL_SECRET = "thresher-registry"
BCRYPT_COST = 10


class RegistryError(RuntimeError):
    """The registry could not be started or used; the message names the step."""


# --- pure parts ---------------------------------------------------------------------------

def registry_config(address: str, root: Path, cert: Path, key: Path, htpasswd: Path, secret: str) -> dict:
    """distribution's configuration (https://distribution.github.io/distribution/about/configuration/)."""
    return {
        "version": 0.1,
        "log": {"level": "info", "formatter": "text", "fields": {"service": "registry"}},
        "storage": {"filesystem": {"rootdirectory": str(root)}, "delete": {"enabled": True},
                    "cache": {"blobdescriptor": "inmemory"}},
        "http": {"addr": address, "secret": secret,
                 "tls": {"certificate": str(cert), "key": str(key)},
                 "headers": {"X-Content-Type-Options": ["nosniff"]}},
        "auth": {"htpasswd": {"realm": "thresher-dev-registry", "path": str(htpasswd)}},
    }


def hosts_toml(address: str, ca: Path) -> str:
    """containerd's per-registry configuration (``config_path``/<host:port>/hosts.toml): the dev
    CA for TLS, pull and resolve only, no credentials (pods bring them).

    The CA is named twice, for the ``[host]`` entry and (top level) for ``server``: containerd
    1.6 resolves through both in turn, takes a 404 from the first as "try the next" and reports
    "not found" only when every host said 404; with the CA on the host entry alone the second
    try ended in ``x509: certificate signed by unknown authority``, which hid the registry's
    answer to a wrong reference. The ``[host]`` table cannot go: 1.6.20 rejects a hosts.toml
    without one ("invalid `host` tree"), falls back to the Docker certs layout and, for a
    loopback registry, to plain HTTP on the TLS port (``400 Bad Request``)."""
    return (f'# The dev registry (thresher/devcluster/registry.py): TLS from the dev CA.\n'
            f'server = "https://{address}"\n'
            f'ca = "{ca}"\n\n'
            f'[host."https://{address}"]\n'
            f'  capabilities = ["pull", "resolve"]\n'
            f'  ca = "{ca}"\n')


def auth_config(address: str, user: str, password: str) -> dict:
    """A docker ``config.json`` / containers ``auth.json`` for one registry (skopeo's
    ``--authfile``, helm's ``--registry-config``, a ``kubernetes.io/dockerconfigjson`` Secret)."""
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"auths": {address: {"username": user, "password": password, "auth": token}}}


def pull_secret(name: str, namespace: str, address: str, user: str, password: str) -> dict:
    """The ``imagePullSecret`` pods of ``namespace`` pull from the registry with."""
    payload = base64.b64encode(json.dumps(auth_config(address, user, password)).encode()).decode()
    return {"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/dockerconfigjson",
            "metadata": {"name": name, "namespace": namespace,
                         "labels": {"app.kubernetes.io/managed-by": "thresher-dev"}},
            "data": {".dockerconfigjson": payload}}


def by_digest(repository: str, digest: str) -> str:
    """``REGISTRY/thresher/jobs@sha256:...``: what pods reference (a tag can move, a digest cannot)."""
    if not digest.startswith("sha256:") or len(digest) != 71:
        raise RegistryError(f"not a sha256 digest: {digest!r}")
    return f"{repository}@{digest}"


# --- the process ------------------------------------------------------------------------

class Registry:
    """The registry of the dev cluster rooted at ``state_dir``."""

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = Path(state_dir)
        self.dir = self.state_dir / "registry"
        self.procs = Supervisor(self.state_dir, RegistryError)
        self.config = self.dir / "config.yml"
        self.htpasswd = self.dir / "htpasswd"
        self.data = self.dir / "data"
        self.auth_file = self.dir / "auth.json"
        self.cert_dir = self.dir / "certs"  # skopeo's --dest-cert-dir: the dev CA only
        self.ca_file = self.state_dir / "pki" / "ca.crt"

    # --- state ---------------------------------------------------------------------------

    @property
    def port(self) -> int:
        path = self.dir / "port"
        if not path.exists():
            self.dir.mkdir(parents=True, exist_ok=True)
            path.write_text(f"{free_port()}\n")
        return int(path.read_text())

    @property
    def address(self) -> str:
        """``host:port`` as image references and helm's ``oci://`` URLs name it."""
        return f"127.0.0.1:{self.port}"

    def credentials(self) -> tuple[str, str]:
        path = self.dir / "credentials.json"
        if not path.exists():
            self.dir.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps({"username": USER, "password": secrets.token_urlsafe(24)}))
            path.chmod(0o600)
        creds = json.loads(path.read_text())
        return creds["username"], creds["password"]

    def running(self) -> bool:
        return self.procs.running(PROCESS)

    def pull_secret(self, namespace: str, name: str = PULL_SECRET) -> dict:
        return pull_secret(name, namespace, self.address, *self.credentials())

    # --- files -----------------------------------------------------------------------------

    def _write_files(self) -> None:
        if shutil.which(BINARY) is None:
            raise RegistryError(f"`{BINARY}` not found (apt-get install docker-registry; `make node-tools`)")
        if shutil.which("htpasswd") is None:
            raise RegistryError("`htpasswd` not found (apt-get install apache2-utils; `make node-tools`)")
        user, password = self.credentials()
        self.data.mkdir(parents=True, exist_ok=True)
        tls = self.dir / "tls"
        cert, key = tls / "registry.crt", tls / "registry.key"
        if not cert.exists():
            pki.issue_serving_cert(self.state_dir / "pki", tls, "registry", "thresher-dev-registry",
                                   names=("localhost",), ips=("127.0.0.1",))
        if not self.htpasswd.exists():
            # -i: the password from stdin, never on a command line; -B: bcrypt.
            proc = subprocess.run(["htpasswd", "-niB", "-C", str(BCRYPT_COST), user], input=password,
                                  capture_output=True, text=True, timeout=30)
            if proc.returncode != 0:
                raise RegistryError(f"htpasswd failed: {proc.stderr.strip()}")
            self.htpasswd.write_text(proc.stdout.strip() + "\n")
            self.htpasswd.chmod(0o600)
        self.config.write_text(yaml.safe_dump(registry_config(
            self.address, self.data, cert, key, self.htpasswd, secrets.token_hex(16)), sort_keys=False))
        self.config.chmod(0o600)
        self.auth_file.write_text(json.dumps(auth_config(self.address, user, password)))
        self.auth_file.chmod(0o600)
        self.cert_dir.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(self.ca_file, self.cert_dir / "ca.crt")

    def write_containerd_hosts(self, config_path: Path) -> Path:
        """``config_path/<host:port>/hosts.toml`` for the node's containerd."""
        folder = config_path / self.address
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "hosts.toml").write_text(hosts_toml(self.address, self.ca_file))
        return folder / "hosts.toml"

    # --- the verbs -------------------------------------------------------------------------

    def answers(self) -> bool:
        """The API base answers over TLS signed by the dev CA and asks for credentials (401)."""
        ctx = ssl.create_default_context(cafile=str(self.ca_file))
        try:
            with urllib.request.urlopen(f"https://{self.address}/v2/", context=ctx, timeout=2):
                return False  # 200 without credentials: authentication is off, not ours
        except urllib.error.HTTPError as err:
            return err.code == 401
        except OSError:
            return False

    def up(self, log: Log = print, timeout: float = 30) -> float:
        """Start the registry unless it runs; wait until it answers. Returns seconds taken."""
        start = time.monotonic()
        if not self.running():
            self._write_files()
            self.procs.start(PROCESS, [shutil.which(BINARY), "serve", str(self.config)], log)
        self.procs.wait(PROCESS, self.answers, timeout, f"answering on https://{self.address}/v2/")
        took = time.monotonic() - start
        log(f"registry {self.address} ready in {took:.1f}s (htpasswd user {USER}, TLS from the dev CA)")
        return took

    def helm_login(self, helm: Path) -> Path:
        """``helm registry login`` into a registry config of this state directory (never the
        user's ~/.config/helm); pass it to helm as ``--registry-config``."""
        config = self.dir / "helm-registry.json"
        user, password = self.credentials()
        proc = subprocess.run([str(helm), "registry", "login", self.address, "--username", user, "--password-stdin",
                               "--ca-file", str(self.ca_file), "--registry-config", str(config)],
                              input=password, capture_output=True, text=True, timeout=60)
        if proc.returncode != 0:
            raise RegistryError(f"helm registry login {self.address} failed: {(proc.stderr or proc.stdout).strip()}")
        return config

    def down(self, log: Log = print) -> None:
        self.procs.stop(PROCESS, log)
