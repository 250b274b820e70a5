"""The simulated fleet: projects, clusters, node pools, nodes and the sync jobs running on them.

The fleet is generated from a seed, so the same options always give the same IDs. Jobs hold no
thread and no timer: a job stores when it started and how long it runs, and its phase and progress
are computed from the clock on every read. Every read and write of job state goes through
one lock, so concurrent requests see a consistent pool.
"""

from __future__ import annotations

import math
import random
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Final, Literal

Clock = Callable[[], float]
"""A source of seconds. Only differences between its readings matter."""

JobPhase = Literal["Initializing", "Running", "Success", "Failed"]

DEFAULT_POOL_ID: Final = "DefaultPool"
DEFAULT_REGION: Final = "ap-southeast-1"
DEFAULT_JOB_SECONDS: Final = 30.0

#: Share of a job's duration spent in the Initializing phase before nodes start to reset.
INITIALIZING_SHARE: Final = 0.1

_CLUSTER_NAME_PREFIXES: Final = ("prod", "staging", "dev")


class SyncConflictError(Exception):
    """A sync was requested for a pool that already has a sync job running."""

    def __init__(self, pool_key: str, job_id: str) -> None:
        super().__init__(f"node pool {pool_key} is already being synchronized by job {job_id}")
        self.pool_key = pool_key
        self.job_id = job_id


@dataclass(frozen=True, slots=True, kw_only=True)
class FleetOptions:
    """Shape of the generated fleet. Counts are per parent, and each cluster also has DefaultPool."""

    projects: int = 2
    clusters_per_project: int = 20
    pools_per_cluster: int = 2
    nodes_per_pool: int = 3
    seed: int = 0
    region: str = DEFAULT_REGION
    unavailable_clusters_per_project: int = 0

    def __post_init__(self) -> None:
        limits = {
            "projects": (self.projects, 1, 1000),
            "clusters_per_project": (self.clusters_per_project, 0, 10_000),
            "pools_per_cluster": (self.pools_per_cluster, 0, 1000),
            "nodes_per_pool": (self.nodes_per_pool, 0, 2000),
            "unavailable_clusters_per_project": (
                self.unavailable_clusters_per_project,
                0,
                self.clusters_per_project,
            ),
        }
        for name, (value, low, high) in limits.items():
            if not low <= value <= high:
                raise ValueError(f"{name} must be between {low} and {high}, got {value}")


@dataclass(frozen=True, slots=True)
class Node:
    id: str
    name: str
    private_ip: str


@dataclass(frozen=True, slots=True)
class NodePool:
    id: str
    name: str
    project_id: str
    cluster_id: str
    nodes: tuple[Node, ...]
    is_default: bool
    created: str

    def key(self, region: str) -> str:
        """Return the target key `region/project/cluster/pool` that campaigns use."""
        return f"{region}/{self.project_id}/{self.cluster_id}/{self.id}"


@dataclass(frozen=True, slots=True)
class Cluster:
    id: str
    name: str
    project_id: str
    phase: str
    pools: tuple[NodePool, ...]
    created: str

    def pool(self, pool_id: str) -> NodePool | None:
        return next((pool for pool in self.pools if pool.id == pool_id), None)


@dataclass(frozen=True, slots=True)
class Project:
    id: str
    name: str
    clusters: tuple[Cluster, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class Job:
    """One sync job. Its phase is a pure function of the clock reading passed in."""

    id: str
    project_id: str
    cluster_id: str
    pool_id: str
    pool_name: str
    node_ids: tuple[str, ...]
    max_unavailable: int
    started_at: float
    duration_seconds: float
    fails: bool
    created: str

    def phase(self, now: float) -> JobPhase:
        elapsed = now - self.started_at
        if elapsed >= self.duration_seconds:
            return "Failed" if self.fails else "Success"
        if elapsed < self.duration_seconds * INITIALIZING_SHARE:
            return "Initializing"
        return "Running"

    def is_running(self, now: float) -> bool:
        return self.phase(now) in ("Initializing", "Running")

    def synced_node_ids(self, now: float) -> tuple[str, ...]:
        """Return the job's nodes already synchronized, in batches of `max_unavailable`.

        A failed job stops before its last batch, so its last nodes stay out of date.
        """
        batch_count = math.ceil(len(self.node_ids) / self.max_unavailable)
        phase = self.phase(now)
        if phase == "Success":
            done_batches = batch_count
        elif phase == "Failed":
            done_batches = max(batch_count - 1, 0)
        elif phase == "Initializing":
            done_batches = 0
        else:
            running_since = self.started_at + self.duration_seconds * INITIALIZING_SHARE
            running_seconds = self.duration_seconds * (1 - INITIALIZING_SHARE)
            progress = (now - running_since) / running_seconds
            done_batches = min(int(progress * batch_count), batch_count)
        return self.node_ids[: done_batches * self.max_unavailable]

    def reason(self, now: float) -> str:
        if self.phase(now) != "Failed":
            return ""
        return f"synchronization of node pool {self.pool_name} failed on its last batch"


@dataclass(frozen=True, slots=True)
class PoolStatus:
    """Snapshot of a pool's synchronization state at one clock reading."""

    job: Job | None
    job_phase: JobPhase | None
    synchronizing: bool
    synced_node_count: int


@dataclass(slots=True)
class _PoolState:
    last_job: Job | None = None
    synced_before_last_job: set[str] = field(default_factory=set)


class Fleet:
    """The generated projects with their clusters, pools and nodes, plus the sync jobs.

    Args:
        options: fleet shape and seed.
        clock: seconds source for job timing; inject a fake one to step jobs in tests.
        job_seconds: how long a sync job runs, in seconds of `clock` (0 finishes at once).
    """

    def __init__(
        self,
        options: FleetOptions | None = None,
        *,
        clock: Clock = time.monotonic,
        job_seconds: float = DEFAULT_JOB_SECONDS,
    ) -> None:
        if job_seconds < 0:
            raise ValueError(f"job_seconds must be >= 0, got {job_seconds}")
        self.options = options or FleetOptions()
        self.region = self.options.region
        self.job_seconds = job_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._rng = random.Random(self.options.seed)
        self.projects: tuple[Project, ...] = tuple(
            self._generate_project(index) for index in range(self.options.projects)
        )
        self._projects_by_id = {project.id: project for project in self.projects}
        self._clusters_by_id = {
            (cluster.project_id, cluster.id): cluster
            for project in self.projects
            for cluster in project.clusters
        }
        self._pool_states: dict[tuple[str, str, str], _PoolState] = {}
        self._jobs: dict[str, Job] = {}

    # Lookups

    def project(self, project_id: str) -> Project | None:
        return self._projects_by_id.get(project_id)

    def cluster(self, project_id: str, cluster_id: str) -> Cluster | None:
        return self._clusters_by_id.get((project_id, cluster_id))

    def pool(self, project_id: str, cluster_id: str, pool_id: str) -> NodePool | None:
        cluster = self.cluster(project_id, cluster_id)
        return cluster.pool(pool_id) if cluster else None

    def pools(self, *, include_default: bool = True) -> Iterator[NodePool]:
        for project in self.projects:
            for cluster in project.clusters:
                for pool in cluster.pools:
                    if include_default or not pool.is_default:
                        yield pool

    def pool_keys(self, *, include_default: bool = True) -> list[str]:
        """Return the target keys of every pool, in generation order."""
        return [pool.key(self.region) for pool in self.pools(include_default=include_default)]

    def job(self, project_id: str, job_id: str) -> Job | None:
        with self._lock:
            job = self._jobs.get(job_id)
        if job is None or job.project_id != project_id:
            return None
        return job

    def now(self) -> float:
        return self._clock()

    # Sync jobs

    def start_sync(
        self,
        pool: NodePool,
        *,
        node_ids: tuple[str, ...],
        max_unavailable: int,
        fails: bool = False,
    ) -> Job:
        """Start a sync job on `pool`, or raise SyncConflictError if one is still running."""
        pool_ref = (pool.project_id, pool.cluster_id, pool.id)
        with self._lock:
            now = self._clock()
            state = self._pool_states.setdefault(pool_ref, _PoolState())
            previous = state.last_job
            if previous is not None and previous.is_running(now):
                raise SyncConflictError(pool.key(self.region), previous.id)
            if previous is not None:
                state.synced_before_last_job.update(previous.synced_node_ids(now))

            job = Job(
                id=str(uuid.UUID(int=self._rng.getrandbits(128), version=4)),
                project_id=pool.project_id,
                cluster_id=pool.cluster_id,
                pool_id=pool.id,
                pool_name=pool.name,
                node_ids=node_ids,
                max_unavailable=max_unavailable,
                started_at=now,
                duration_seconds=self.job_seconds,
                fails=fails,
                created=_timestamp(),
            )
            state.last_job = job
            self._jobs[job.id] = job
            return job

    def pool_status(self, pool: NodePool) -> PoolStatus:
        with self._lock:
            now = self._clock()
            state = self._pool_states.get((pool.project_id, pool.cluster_id, pool.id))
            if state is None or state.last_job is None:
                return PoolStatus(
                    job=None, job_phase=None, synchronizing=False, synced_node_count=0
                )

            job = state.last_job
            synced = state.synced_before_last_job.union(job.synced_node_ids(now))
            return PoolStatus(
                job=job,
                job_phase=job.phase(now),
                synchronizing=job.is_running(now),
                synced_node_count=len(synced),
            )

    def node_synced(self, pool: NodePool) -> set[str]:
        """Return the IDs of the pool's nodes whose configuration is up to date."""
        with self._lock:
            now = self._clock()
            state = self._pool_states.get((pool.project_id, pool.cluster_id, pool.id))
            if state is None or state.last_job is None:
                return set()
            return state.synced_before_last_job.union(state.last_job.synced_node_ids(now))

    # Description for tests and the /_sim/fleet endpoint

    def to_dict(self) -> dict[str, object]:
        return {
            "region": self.region,
            "projects": [
                {
                    "id": project.id,
                    "name": project.name,
                    "clusters": [
                        {
                            "id": cluster.id,
                            "name": cluster.name,
                            "phase": cluster.phase,
                            "pools": [
                                {
                                    "id": pool.id,
                                    "name": pool.name,
                                    "default": pool.is_default,
                                    "nodes": [node.id for node in pool.nodes],
                                }
                                for pool in cluster.pools
                            ],
                        }
                        for cluster in project.clusters
                    ],
                }
                for project in self.projects
            ],
        }

    # Generation

    def _uuid(self) -> str:
        return str(uuid.UUID(int=self._rng.getrandbits(128), version=4))

    def _generate_project(self, index: int) -> Project:
        project_id = f"{self._rng.getrandbits(128):032x}"
        name = f"{self.options.region}_{index:02d}"
        unavailable_from = (
            self.options.clusters_per_project - self.options.unavailable_clusters_per_project
        )
        clusters = tuple(
            self._generate_cluster(project_id, number, available=number < unavailable_from)
            for number in range(self.options.clusters_per_project)
        )
        return Project(id=project_id, name=name, clusters=clusters)

    def _generate_cluster(self, project_id: str, number: int, *, available: bool) -> Cluster:
        cluster_id = self._uuid()
        prefix = _CLUSTER_NAME_PREFIXES[number % len(_CLUSTER_NAME_PREFIXES)]
        name = f"{prefix}-{number:03d}"
        default_pool = self._generate_pool(
            project_id, cluster_id, DEFAULT_POOL_ID, DEFAULT_POOL_ID, is_default=True
        )
        pools = [default_pool]
        for pool_number in range(self.options.pools_per_cluster):
            pool_name = f"{name}-pool-{pool_number:02d}"
            pools.append(
                self._generate_pool(
                    project_id, cluster_id, self._uuid(), pool_name, is_default=False
                )
            )
        return Cluster(
            id=cluster_id,
            name=name,
            project_id=project_id,
            phase="Available" if available else "Unavailable",
            pools=tuple(pools),
            created=_timestamp(),
        )

    def _generate_pool(
        self, project_id: str, cluster_id: str, pool_id: str, name: str, *, is_default: bool
    ) -> NodePool:
        nodes = tuple(
            Node(
                id=self._uuid(),
                name=f"{name.lower()}-{number:04d}",
                private_ip=f"10.{self._rng.randrange(256)}.{self._rng.randrange(256)}."
                f"{self._rng.randrange(1, 255)}",
            )
            for number in range(self.options.nodes_per_pool)
        )
        return NodePool(
            id=pool_id,
            name=name,
            project_id=project_id,
            cluster_id=cluster_id,
            nodes=nodes,
            is_default=is_default,
            created=_timestamp(),
        )


def _timestamp() -> str:
    """Return the current UTC time in the format CCE uses for creationTimestamp."""
    return datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S.%f +0000 UTC")
