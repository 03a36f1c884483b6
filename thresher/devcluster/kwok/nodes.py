"""The simulated nodes kwok manages: two CPU nodes and a GPU node advertising ``nvidia.com/gpu``.

Where the real node (``thresher-local``) is part of the cluster, pods must land on it unless
they ask for kwok: a pod that lands on a kwok node "succeeds" with no container run, which is
only right for a run that is meant to be simulated. So in that mode the CPU nodes carry kwok's
own ``kwok.x-k8s.io/node=fake:NoSchedule`` taint, which only pods meant for simulation tolerate
(``SIMULATED_TOLERATION``; select them with ``SIMULATED_SELECTOR``). The GPU node is tainted
for GPUs in every mode and stays the one place a GPU pod can run: simulated, and said so.
Without the real node nothing is tainted for simulation: every pod is simulated anyway.
"""

from __future__ import annotations

import yaml

GPU_NODE = "kwok-gpu-1"
CPU_NODES = ("kwok-cpu-1", "kwok-cpu-2")
NODE_NAMES = (*CPU_NODES, GPU_NODE)
GPU_RESOURCE = "nvidia.com/gpu"
GPU_LABEL = "nvidia.com/gpu.present"
SIMULATED_TAINT = {"key": "kwok.x-k8s.io/node", "value": "fake", "effect": "NoSchedule"}
SIMULATED_TOLERATION = {"key": "kwok.x-k8s.io/node", "operator": "Equal", "value": "fake", "effect": "NoSchedule"}
SIMULATED_SELECTOR = {"type": "kwok"}


def node_manifest(name: str, gpus: int = 0, real_node: bool = False) -> dict:
    """One kwok node; ``real_node``: the cluster also runs thresher-local (taint the CPU nodes)."""
    capacity = {"cpu": "16", "memory": "64Gi", "pods": "110"}
    labels = {
        "kubernetes.io/hostname": name, "kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64",
        "type": "kwok", "thresher.dev/node-pool": "gpu" if gpus else "cpu",
    }
    taints = []
    if gpus:
        capacity[GPU_RESOURCE] = str(gpus)
        labels[GPU_LABEL] = "true"
        taints.append({"key": GPU_RESOURCE, "value": "present", "effect": "NoSchedule"})
    elif real_node:
        taints.append(dict(SIMULATED_TAINT))
    # Re-applied without the taint, kubectl's three-way merge removes it again.
    return {
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "labels": labels,
                     "annotations": {"kwok.x-k8s.io/node": "fake", "node.alpha.kubernetes.io/ttl": "0"}},
        "spec": {"taints": taints} if taints else {},
        "status": {"capacity": capacity, "allocatable": dict(capacity)},
    }


def nodes_manifest(real_node: bool = False) -> str:
    docs = [node_manifest(n, real_node=real_node) for n in CPU_NODES] + [node_manifest(GPU_NODE, gpus=8)]
    return yaml.safe_dump_all(docs, sort_keys=False)
