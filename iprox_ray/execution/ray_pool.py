"""A fault-tolerant pool of Ray actors, each holding one set-up task (e.g. a model replica).

The driver loop hands out shards with `ray.wait`; a shard whose actor died is re-queued and the
actor replaced; a shard whose process() raised is retried up to max_retries times.

With keep_actors, the actor processes outlive a run: the next run switches them to its task
(teardown of the old, setup of the new) instead of starting fresh processes, which costs about
5 s per stage on a small machine (a Ray worker process, then importing torch and transformers).
close() ends them.
"""

from __future__ import annotations

import collections
import gc
import itertools
import logging
import os
import socket
from dataclasses import dataclass

import ray
from ray.exceptions import GetTimeoutError, RayActorError, RayTaskError, WorkerCrashedError

from iprox_ray.execution.executors import Callbacks, short_error
from iprox_ray.execution.task import ShardRef, ShardTask, WorkersLostError

log = logging.getLogger(__name__)


class _Worker:
    """Actor body: sets up the task once, then processes shards."""

    def __init__(self, task: ShardTask, expect_one_gpu: bool):
        if expect_one_gpu:
            ids = ray.get_gpu_ids()
            if len(ids) != 1:
                raise RuntimeError(f"expected exactly one visible GPU in this actor, Ray gave {ids}")
        self.task: ShardTask | None = None
        self.use(task)

    def use(self, task: ShardTask) -> None:
        """Hold `task` from now on: the previous one is torn down first (its model freed)."""
        if self.task is not None:
            old, self.task = self.task, None
            old.teardown()
            del old
            gc.collect()  # free the old task's model before the new one loads
        task.setup()
        self.task = task

    def process(self, ref: ShardRef) -> dict:
        stats = self.task.process(ref)
        # Where the shard ran: shows in the completion marker (e.g. both nodes of a gang job worked).
        return {**stats, "worker": {"host": socket.gethostname(), "node_ip": ray.util.get_node_ip_address(),
                                    "pid": os.getpid()}}

    def teardown(self) -> None:
        if self.task is not None:
            self.task.teardown()


@dataclass
class RayActorPoolExecutor:
    num_actors: int
    max_actor_deaths: int | None = None  # default: 3 per actor slot
    keep_actors: bool = False  # the next run reuses the actor processes; close() ends them

    def __post_init__(self):
        self.actors: list = []  # visible to tests that kill workers
        self.slots: dict = {}
        self._slot_ids = itertools.count()
        self._resources = None  # what the live actors were started with

    def _switch(self, task: ShardTask, wanted: int) -> list:
        """Actors holding `task`: live ones switched to it, fresh ones up to `wanted`. An actor
        whose switch fails is replaced by a fresh one (whose own start-up failure counts as a death
        in the run loop, as for any new actor)."""
        if self.actors and task.resources != self._resources:
            self.close()  # other CPUs/GPUs/threads: start over
        self._resources = task.resources
        calls = [(actor, actor.use.remote(task)) for actor in self.actors]
        ready = []
        for actor, call in calls:
            try:
                ray.get(call)
                ready.append(actor)
            except (RayActorError, WorkerCrashedError, RayTaskError) as exc:
                log.warning("a kept actor could not switch to %s (%s); starting a fresh one",
                            task.name, short_error(exc))
                self._shutdown([actor])
                self.slots.pop(actor, None)
        ready += [self._spawn(task) for _ in range(max(0, wanted - len(ready)))]
        self.actors = list(ready)
        return ready

    def close(self) -> None:
        self._shutdown(self.actors)
        self.actors, self.slots, self._resources = [], {}, None

    def _spawn(self, task: ShardTask):
        res = task.resources
        options = {
            "num_cpus": res.cpus,
            "num_gpus": res.gpus,
            "max_restarts": 0,
            "max_task_retries": 0,
            "runtime_env": {"env_vars": res.thread_env()},
            # Spread replicas over the nodes: a gang job's workers sit on every node, not packed on the head.
            "scheduling_strategy": "SPREAD",
        }
        actor = ray.remote(_Worker).options(**options).remote(task, res.gpus >= 1)
        self.slots[actor] = next(self._slot_ids)
        return actor

    def run(self, task: ShardTask, refs: list[ShardRef], callbacks: Callbacks, max_retries: int) -> dict[ShardRef, str]:
        pending = collections.deque(refs)
        attempts: dict[ShardRef, int] = collections.Counter()
        failed: dict[ShardRef, str] = {}
        death_budget = self.max_actor_deaths if self.max_actor_deaths is not None else 3 * self.num_actors
        deaths = 0
        idle = self._switch(task, min(self.num_actors, len(refs)))
        inflight: dict = {}
        try:
            while pending or inflight:
                while idle and pending:
                    actor, shard = idle.pop(), pending.popleft()
                    inflight[actor.process.remote(shard)] = (actor, shard)
                    callbacks.started(shard, attempts[shard] + 1, self.slots[actor])
                ready, _ = ray.wait(list(inflight), num_returns=1)
                for ref in ready:
                    actor, shard = inflight.pop(ref)
                    try:
                        stats = ray.get(ref)
                    except (RayActorError, WorkerCrashedError) as exc:
                        deaths += 1
                        log.warning("actor died on %s (%s); re-queueing it", shard, short_error(exc))
                        if deaths > death_budget:
                            raise WorkersLostError(
                                f"{deaths} Ray actor deaths in one stage (at most {death_budget} are replaced); the "
                                f"last on {shard.stage} shard {shard.shard}: {short_error(exc).splitlines()[-1]}. "
                                "Finished shards are kept: rerun to resume. Actors killed for memory: lower "
                                "sketch.token_budget or cluster.actors") from exc
                        pending.appendleft(shard)
                        self.actors.remove(actor)
                        replacement = self._spawn(task)
                        self.actors.append(replacement)
                        idle.append(replacement)
                        continue
                    except RayTaskError as exc:
                        attempts[shard] += 1
                        error = short_error(exc.cause if getattr(exc, "cause", None) else exc)
                        final = attempts[shard] > max_retries
                        callbacks.on_failure(shard, error, attempts[shard], final)
                        if final:
                            failed[shard] = error
                        else:
                            pending.append(shard)
                        idle.append(actor)
                        continue
                    callbacks.on_result(shard, stats)
                    idle.append(actor)
        except BaseException:
            self.close()  # in-flight shards may still run: never hand these actors on
            raise
        if not self.keep_actors:
            self.close()
        return failed

    @staticmethod
    def _shutdown(actors) -> None:
        for actor in actors:
            try:
                ray.get(actor.teardown.remote(), timeout=30)
            except (RayActorError, WorkerCrashedError, GetTimeoutError, RayTaskError):
                pass
            ray.kill(actor)
