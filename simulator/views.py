"""JSON bodies in the shapes of the CCE v3 API, rendered from fleet objects.

Only the fields a fleet tool reads carry simulated values. The others carry fixed plausible values
so that the official SDK can deserialize every response.
"""

from __future__ import annotations

from typing import Any

from simulator.fleet import Cluster, Fleet, Job, Node, NodePool, PoolStatus

JsonObject = dict[str, Any]

KUBERNETES_VERSION = "v1.28"
NODE_FLAVOR = "c7.large.2"
NODE_OS = "EulerOS 2.9"
JOB_TYPE = "SyncNodePool"
"""Job type reported for sync jobs. NOTE: CCE does not document the value for this operation."""


def cluster_list(clusters: list[Cluster]) -> JsonObject:
    return {"kind": "Cluster", "apiVersion": "v3", "items": [cluster_item(c) for c in clusters]}


def cluster_item(cluster: Cluster) -> JsonObject:
    return {
        "kind": "Cluster",
        "apiVersion": "v3",
        "metadata": {
            "name": cluster.name,
            "uid": cluster.id,
            "creationTimestamp": cluster.created,
            "updateTimestamp": cluster.created,
        },
        "spec": {
            "category": "CCE",
            "type": "VirtualMachine",
            "flavor": "cce.s1.small",
            "version": KUBERNETES_VERSION,
        },
        "status": {"phase": cluster.phase},
    }


def pool_list(fleet: Fleet, pools: list[NodePool]) -> JsonObject:
    items = [pool_item(pool, fleet.pool_status(pool), fleet.region) for pool in pools]
    return {"kind": "List", "apiVersion": "v3", "items": items}


def pool_item(pool: NodePool, status: PoolStatus, region: str) -> JsonObject:
    node_count = len(pool.nodes)
    status_body: JsonObject = {
        "currentNode": node_count,
        "creatingNode": 0,
        "deletingNode": 0,
        "activeNode": node_count,
        "configurationSyncedNodeCount": status.synced_node_count,
        "phase": "",
    }
    if status.job is not None:
        status_body["jobId"] = status.job.id
        status_body["conditions"] = [_synchronizing_condition(status.job, status)]

    return {
        "kind": "NodePool",
        "apiVersion": "v3",
        "metadata": {
            "name": pool.name,
            "uid": pool.id,
            "creationTimestamp": pool.created,
            "updateTimestamp": pool.created,
        },
        "spec": {
            "type": "vm",
            "initialNodeCount": node_count,
            "nodeTemplate": {
                "flavor": NODE_FLAVOR,
                "az": f"{region}a",
                "os": NODE_OS,
                "login": {"sshKey": "fleet-keypair"},
            },
            "autoscaling": {"enable": False},
        },
        "status": status_body,
    }


def _synchronizing_condition(job: Job, status: PoolStatus) -> JsonObject:
    return {
        "type": "ConfigurationSynchronizing",
        "status": "True" if status.synchronizing else "False",
        "reason": "Synchronizing" if status.synchronizing else f"Job{status.job_phase}",
        "message": f"job {job.id} is {status.job_phase}",
        "lastTransitTime": job.created,
    }


def node_list(pool_by_node: dict[str, NodePool], nodes: list[Node], synced: set[str]) -> JsonObject:
    items = [node_item(node, pool_by_node[node.id], node.id in synced) for node in nodes]
    return {
        "kind": "List",
        "apiVersion": "v3",
        "items": items,
        "pageInfo": {"currentCount": len(items)},
    }


def node_item(node: Node, pool: NodePool, up_to_date: bool) -> JsonObject:
    return {
        "kind": "Node",
        "apiVersion": "v3",
        "metadata": {
            "name": node.name,
            "uid": node.id,
            "annotations": {"kubernetes.io/node-pool.id": pool.id},
            "creationTimestamp": pool.created,
            "updateTimestamp": pool.created,
        },
        "spec": {"flavor": NODE_FLAVOR, "os": NODE_OS},
        "status": {
            "phase": "Active",
            "privateIP": node.private_ip,
            "configurationUpToDate": up_to_date,
        },
    }


def job_item(job: Job, now: float) -> JsonObject:
    return {
        "kind": "Job",
        "apiVersion": "v3",
        "metadata": {
            "uid": job.id,
            "creationTimestamp": job.created,
            "updateTimestamp": job.created,
        },
        "spec": {
            "type": JOB_TYPE,
            "clusterUID": job.cluster_id,
            "resourceID": job.pool_id,
            "resourceName": job.pool_name,
            "extendParam": {},
            "subJobs": [],
        },
        "status": {"phase": job.phase(now), "reason": job.reason(now)},
    }


def cce_error(code: str, message: str) -> JsonObject:
    return {"errorCode": code, "errorMessage": message}


def gateway_error(code: str, message: str, request_id: str) -> JsonObject:
    return {"error_code": code, "error_msg": message, "request_id": request_id}
