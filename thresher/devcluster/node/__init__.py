"""A real node for the local control plane (opt-in: ``thresher dev up --node``).

The kubelet built from the pinned Kubernetes, Debian's containerd (CRI) and runc, and CNI
(bridge + host-local + portmap + loopback from containernetworking-plugins) run as plain
processes next to the control plane; the node registers as ``thresher-local`` with a client
certificate from the dev CA (``system:node:thresher-local`` in ``system:nodes``, authorised by
the apiserver's Node authorizer). The sandbox image is built locally from ``node/pause.go`` and
imported; Thresher's images, built from the Dockerfile on a debootstrap base (``images.py``), are
pulled by digest from the node's registry (``registry.py``: docker-registry, TLS from the dev
CA, htpasswd; containerd trusts it through ``certs.d/<host:port>/hosts.toml``).

Everything the node owns is named after the state directory, so ``down`` can remove exactly
that and nothing else: the registry's process and storage, containerd's root/state and
sockets, the kubelet's root and pod logs, a cgroup parent ``/thresher-<id>`` in every cgroup
v1 hierarchy, a bridge ``thr<id>``, the pods' network namespaces, host-local IPAM data, and
the local PersistentVolumes' folders.

Requirements (``preflight`` names the one that fails): root, Linux cgroups (v1 with cpu,
cpuacct, cpuset, memory, pids; or v2), no swap, overlayfs, and the Debian packages
containerd, runc, containernetworking-plugins.

Modules, by concern (each imports only those above it):

* ``shell``: ``NodeError`` and the host-command runner;
* ``layout``: every name and path of the node, derived from the state directory;
* ``preflight``: the host's requirements and facts (address, cgroups, capabilities);
* ``config``: certificates, containerd/CNI/kubelet configuration, local storage (rendering);
* ``containers``: containerd through ``ctr`` (readiness, images, removal);
* ``host``: cgroups, kernel tunables, iptables, netns, mounts, the bridge (change and undo);
* ``lifecycle``: ``Node.up``/``down``/``leftovers``; processes through ``devcluster.process``.
"""

from thresher.devcluster.node.layout import NODE_COMPONENTS, NODE_NAME, NodeLayout
from thresher.devcluster.node.lifecycle import Node
from thresher.devcluster.node.shell import NodeError

__all__ = ["NODE_COMPONENTS", "NODE_NAME", "Node", "NodeError", "NodeLayout"]
