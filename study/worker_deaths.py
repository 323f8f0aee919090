"""A trial's worker killed by Ray's memory monitor fails that trial, never the study.

Ray Tune's actor manager (ray 2.60: `ray/air/execution/_internal/actor_manager.py`, `RayActorManager._actor_task_failed`)
handles a trial task's `RayActorError` (its worker died: the trial is retried as `--max-failures` says,
then marked failed) and `RayTaskError` (the trial raised), and re-raises anything else in the driver's
event loop. When Ray's memory monitor kills a trial's worker, the task fails with
`ray.exceptions.OutOfMemoryError`, which is neither: a study on a CPU ended with "RuntimeError: Caught
unexpected exception: 1 worker(s) were killed due to the node running low on memory", and every
unstarted trial of the experiment was lost. There is no public hook for this, so `tolerate_worker_deaths`
wraps that one method to pass such an error on as the worker's death that it is. The retried trial starts
at half its micro-batch (`trainables.training.memory.TrialMemory`).
"""

from __future__ import annotations

import functools


def tolerate_worker_deaths() -> None:
    """Make Ray Tune treat a trial task's `OutOfMemoryError` (and any other error of Ray's that is neither
    an actor's death nor the trial's own exception) as its worker's death. Idempotent."""
    from ray.air.execution._internal.actor_manager import RayActorManager as ActorManager
    from ray.exceptions import RayActorError, RayError, RayTaskError

    original = ActorManager._actor_task_failed
    if getattr(original, "tolerates_worker_deaths", False):
        return

    @functools.wraps(original)
    def _actor_task_failed(self, tracked_actor_task, exception):
        if isinstance(exception, RayError) and not isinstance(exception, RayActorError | RayTaskError):
            death = RayActorError(error_msg=f"the trial's worker died: {exception}")
            death.__cause__ = exception
            exception = death
        return original(self, tracked_actor_task, exception)

    _actor_task_failed.tolerates_worker_deaths = True
    ActorManager._actor_task_failed = _actor_task_failed
