"""Pinned versions of every upstream binary the local control plane runs.

This is the one place to change a version. Kubernetes 1.34 is the newest minor
whose kubelet still runs on cgroup v1 hosts without extra flags, and kwok
v0.8.0 pairs it with etcd 3.6.
"""

KUBERNETES = "v1.34.4"
ETCD = "v3.6.16"
KWOK = "v0.8.0"
HELM = "v3.21.4"

# The Kubernetes commands built from k8s.io/kubernetes, by binary name.
KUBERNETES_COMMANDS = (
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kubectl",
    "kubelet",  # the opt-in real node (thresher/devcluster/node/)
    "kube-proxy",  # beside the kubelet on the real node: Services (iptables mode)
)
