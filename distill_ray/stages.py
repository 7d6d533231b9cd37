"""The pipeline is a list of small stages; each declares the columns it reads and writes.

``check_flow`` validates the whole data flow before any work starts (a stage that reads a column nobody
wrote is a configuration error, not a crash an hour into a job); ``apply_stages`` turns the list into Ray
Data operators. Three kinds cover the pipeline:

- ``BatchStage``: a plain function over a pandas batch (stateless, runs as Ray tasks);
- ``ActorStage``: a callable class over batches, on a fixed pool of actors (models, sandboxes: state that
  is expensive to build once per batch);
- ``GroupStage``: a function over all rows that share a key (voting over a prompt's samples).
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from typing import Any, Callable

import ray.data

from distill_ray.metrics import StageMeter


@dataclass(frozen=True)
class Stage:
    name: str
    reads: tuple[str, ...]
    writes: tuple[str, ...]

    def apply(self, ds: ray.data.Dataset) -> ray.data.Dataset:
        raise NotImplementedError


@dataclass(frozen=True)
class BatchStage(Stage):
    fn: Callable = None
    fn_kwargs: dict = field(default_factory=dict)
    batch_size: int | None = None

    def apply(self, ds):
        return ds.map_batches(metered(self.fn, self.name), fn_kwargs=self.fn_kwargs, batch_format="pandas",
                              batch_size=self.batch_size)


@dataclass(frozen=True)
class ActorStage(Stage):
    cls: type = None
    init_kwargs: dict = field(default_factory=dict)
    actors: int = 1
    cpus_per_actor: float = 1.0
    gpus_per_actor: float = 0.0
    batch_size: int = 8
    # No restart settings: Ray Data restarts a dead pool actor (killed, OOM-killed, lost node) and retries its
    # batch by default. Setting them explicitly would stop Ray Data from fusing the prompt stage into the
    # teacher actor, and the prompt tasks would then need a CPU of their own (a deadlock on 2 CPUs).

    def apply(self, ds):
        return ds.map_batches(
            pool_actor(self.cls, self.name),
            fn_constructor_kwargs=self.init_kwargs,
            compute=ray.data.ActorPoolStrategy(size=self.actors),
            num_cpus=self.cpus_per_actor,
            num_gpus=self.gpus_per_actor or None,
            batch_size=self.batch_size,
            batch_format="pandas",
        )


OUT_OF_MEMORY_EXIT = 75


def is_out_of_memory(error: BaseException) -> bool:
    # torch reports a failed CPU allocation as RuntimeError, a CUDA one as torch.OutOfMemoryError.
    return (isinstance(error, MemoryError) or type(error).__name__ == "OutOfMemoryError"
            or "can't allocate memory" in str(error))


def metered(fn: Callable, stage: str) -> Callable:
    """``fn`` recording the stage's live metrics (``metrics.py``), under ``fn``'s name (Ray Data names its
    operators after it)."""
    meter = StageMeter(stage)

    def run(batch, **kwargs):
        return meter.call(fn, batch, **kwargs)

    run.__name__ = run.__qualname__ = fn.__name__
    return run


def pool_actor(cls: type, stage: str) -> type:
    """``cls`` whose ``__call__`` records the stage's live metrics and ends its process when it runs out of
    memory, so that Ray restarts the actor (a fresh process, memory returned) and retries the batch, instead of
    the error failing the whole job. A subclass with the same name, so the actor keeps its name in Ray's tables
    and process titles."""
    def __call__(self, batch):
        if "_stage_meter" not in self.__dict__:
            self._stage_meter = StageMeter(stage)
        try:
            return self._stage_meter.call(lambda b: cls.__call__(self, b), batch)
        except Exception as error:
            if not is_out_of_memory(error):
                raise
            print(f"{cls.__name__}: out of memory ({error}); exiting so that Ray restarts this actor",
                  file=sys.stderr, flush=True)
            os._exit(OUT_OF_MEMORY_EXIT)

    return type(cls.__name__, (cls,), {"__call__": __call__, "__module__": cls.__module__,
                                       "__qualname__": cls.__qualname__})


@dataclass(frozen=True)
class GroupStage(Stage):
    key: str = ""
    fn: Callable = None
    fn_kwargs: dict = field(default_factory=dict)
    partitions: int | None = None  # shuffle partitions (Ray's default, 200, is all overhead on small runs)

    def apply(self, ds):
        return ds.groupby(self.key, num_partitions=self.partitions).map_groups(
            metered(self.fn, self.name), fn_kwargs=self.fn_kwargs, batch_format="pandas")


def check_flow(source_columns: tuple[str, ...] | list[str], stages: list[Stage]) -> list[str]:
    """Columns available after all stages; raises if a stage reads a column nothing upstream wrote."""
    available = list(source_columns)
    for stage in stages:
        missing = [c for c in stage.reads if c not in available]
        if missing:
            raise ValueError(f"stage {stage.name!r} reads {missing}, which no earlier stage writes")
        available += [c for c in stage.writes if c not in available]
    return available


def apply_stages(ds: ray.data.Dataset, source_columns, stages: list[Stage]) -> ray.data.Dataset:
    check_flow(source_columns, stages)
    for stage in stages:
        ds = stage.apply(ds)
    return ds


def describe(stages: list[Stage]) -> list[dict[str, Any]]:
    """The data flow in one table, one row per stage (the README shows it)."""
    return [{"stage": s.name, "kind": type(s).__name__, "reads": list(s.reads), "writes": list(s.writes)} for s in stages]
