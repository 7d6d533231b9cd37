"""The stage layer: stage kinds, the flow check, and the wrapper every stage's function runs in.

A pipeline is a list of stages; each declares the columns it reads and the columns it writes with their Arrow
types. ``check_flow`` validates the whole data flow before any work starts (a stage that reads a column nobody
wrote is a configuration error, not a crash an hour into a job) and returns every column's type, from which
the output schema is built; ``apply_stages`` turns the list into Ray Data operators. The kinds:

- ``BatchStage``: a plain function over a pandas batch (stateless, runs as Ray tasks, or inside the next
  stage's actors when it says ``in_next_pool``);
- ``ActorStage``: a callable class over batches, on a fixed pool of actors (models, sandboxes: state that
  is expensive to build once per batch);
- ``GroupStage``: a function over all rows that share a key (voting over a prompt's samples);
- ``UnionStage``: parallel branches over the same rows, unioned (one teacher pool per branch).

Every function and actor call is metered (``metrics.py``), and an actor that runs out of memory exits so that
Ray restarts it and retries its batch.
"""

from __future__ import annotations

import math
import os
import sys
from dataclasses import dataclass, field, replace
from typing import Any, Callable

import pandas as pd
import pyarrow as pa
import ray.data

from distill_ray.metrics import StageMeter

Columns = dict[str, pa.DataType]   # column name -> its Arrow type, in the order a stage adds them


@dataclass(frozen=True)
class Stage:
    name: str
    reads: tuple[str, ...]
    writes: Columns   # every column the stage adds (or rewrites), with its type
    fanout: int = 1   # rows out per row in (a teacher: its samples), so a sink knows when a problem is complete

    kind = "stage"    # how the README's stage table describes it

    def rows_per_row(self) -> int:
        return self.fanout

    def apply(self, ds: ray.data.Dataset) -> ray.data.Dataset:
        raise NotImplementedError


# Logical CPUs of a light task stage (prompt rendering, program extraction: string work, milliseconds a batch).
# Every actor pool reserves memory, which keeps Ray Data from fusing such tasks into a pool; as separate tasks
# they must never wait for a CPU the pools hold (teacher 1 + verifier 0.5 of 2 CPUs would deadlock).
LIGHT_TASK = 0
# Tasks that reserve no CPU are not held back by the CPUs free, so Ray Data would run one per block it has at once,
# each in a Ray worker process of its own (10^6 problems: over 100 workers and 16 GB before this cap). A light
# task is milliseconds a batch: a few at a time keep ahead of the pools.
LIGHT_TASK_CONCURRENCY = 4


def on_driver_node() -> dict:
    """Ray Data options that pin a task or actor to the driver's node (the label every node carries). The driver's
    node holds the job's files (the source parts it wrote, the shards and quarantine it reads back), so those need
    no shared file system; and a lost worker node can never take the sink's buffered rows with it (losing the
    driver's node ends the job anyway). Called when a stage is applied: the driver is connected then."""
    import ray

    return {"label_selector": {"ray.io/node-id": ray.get_runtime_context().get_node_id()}}


@dataclass(frozen=True)
class BatchStage(Stage):
    fn: Callable = None
    fn_kwargs: dict = field(default_factory=dict)
    batch_size: int | None = None   # None: one call per block
    cpus: float | None = None       # logical CPUs per task (None: Ray Data's default, 1)
    # Run inside the next stage's actors when that is an actor pool (``apply_each``): the rows go there anyway,
    # so the stage costs no Ray task, no worker process and no trip through the object store of its own.
    in_next_pool: bool = False

    @property
    def kind(self) -> str:
        return "in the next stage's actors (tasks before any other stage)" if self.in_next_pool else "tasks"

    def apply(self, ds):
        return ds.map_batches(metered(self.fn, self.name), fn_kwargs=self.fn_kwargs, batch_format="pandas",
                              batch_size=self.batch_size, num_cpus=self.cpus,
                              concurrency=LIGHT_TASK_CONCURRENCY if self.cpus == LIGHT_TASK else None)


@dataclass(frozen=True)
class ActorStage(Stage):
    kind = "actor pool"
    cls: type = None
    init_kwargs: dict = field(default_factory=dict)
    actors: int = 1
    cpus_per_actor: float = 1.0
    gpus_per_actor: float = 0.0
    # Memory Ray reserves per actor (None: none, Ray's default); or a function that gives it when the stage runs
    # (an estimate that needs the model on disk: building a stage list stays cheap).
    memory_gib: float | Callable[[], float | None] | None = None
    batch_size: int | None = 8      # None: one call per block
    # Custom Ray resources each actor needs: the pool runs only on nodes that declare them (a teacher node,
    # verifier nodes), and a lost node's actors restart on another node that has them.
    resources: dict[str, float] = field(default_factory=dict)
    driver_node: bool = False       # pinned to the driver's node (``on_driver_node``): the shard sinks
    before: tuple[BatchStage, ...] = ()   # light stages run on each batch first (``BatchStage.in_next_pool``)
    # No restart settings: Ray Data restarts a dead pool actor (killed, OOM-killed, lost node) and retries its
    # batch by default (a stage run ``before`` runs again with it).

    def apply(self, ds):
        memory_gib = self.memory_gib() if callable(self.memory_gib) else self.memory_gib
        return ds.map_batches(
            pool_actor(self.cls, self.name, self.before),
            fn_constructor_kwargs=self.init_kwargs,
            compute=ray.data.ActorPoolStrategy(size=self.actors),
            num_cpus=self.cpus_per_actor,
            num_gpus=self.gpus_per_actor or None,
            memory=int(memory_gib * 2**30) if memory_gib else None,
            batch_size=self.batch_size,
            batch_format="pandas",
            **({"resources": dict(self.resources)} if self.resources else {}),
            **(on_driver_node() if self.driver_node else {}),
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


def pool_actor(cls: type, stage: str, before: tuple[BatchStage, ...] = ()) -> type:
    """``cls`` whose ``__call__`` records the stage's live metrics and ends its process when it runs out of
    memory, so that Ray restarts the actor (a fresh process, memory returned) and retries the batch, instead of
    the error failing the whole job. A subclass with the same name, so the actor keeps its name in Ray's tables
    and process titles. ``before``: light stages run on each batch first, each metered as itself."""
    first = [(metered(s.fn, s.name), s.fn_kwargs) for s in before]

    def __call__(self, batch):
        if "_stage_meter" not in self.__dict__:
            self._stage_meter = StageMeter(stage)
        try:
            for fn, kwargs in first:
                batch = fn(batch, **kwargs)
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
    # Optional: the same over a frame of several whole groups at once (faster; the shard sink uses it).
    groups_fn: Callable | None = None
    partitions: int | None = None  # shuffle partitions (Ray's default, 200, is all overhead on small runs)

    @property
    def kind(self) -> str:
        return f"group by `{self.key}`"

    def apply(self, ds):
        return ds.groupby(self.key, num_partitions=self.partitions).map_groups(
            metered(self.fn, self.name), fn_kwargs=self.fn_kwargs, batch_format="pandas")


@dataclass(frozen=True)
class UnionStage(Stage):
    """Parallel branches over the same input rows, their outputs unioned (Ray Data ``union``): one teacher
    pool per branch. Each branch's flow is checked like a stage list."""

    branches: tuple[tuple[Stage, ...], ...] = field(default_factory=tuple)

    @property
    def kind(self) -> str:
        return "union of " + "; ".join(" -> ".join(f"{s.name} ({s.kind})" for s in branch) for branch in self.branches)

    def rows_per_row(self) -> int:
        return sum(rows_per_row(branch) for branch in self.branches)

    def __post_init__(self):
        for branch in self.branches:
            missing = [c for c in self.writes if c not in check_flow(self.reads, list(branch))]
            if missing:
                raise ValueError(f"stage {self.name!r}: a branch ending in {branch[-1].name!r} does not write {missing}")

    def apply(self, ds):
        outputs = [apply_each(ds, branch) for branch in self.branches]
        return outputs[0].union(*outputs[1:]) if len(outputs) > 1 else outputs[0]


def check_flow(source: Columns | tuple[str, ...] | list[str], stages: list[Stage]) -> Columns:
    """Every column after all stages, with its type (None: not declared, Arrow infers it); raises if a stage
    reads a column nothing upstream wrote. ``source``: the input's columns (names, or names with types)."""
    available: Columns = dict(source) if isinstance(source, dict) else dict.fromkeys(source)
    for stage in stages:
        missing = [c for c in stage.reads if c not in available]
        if missing:
            raise ValueError(f"stage {stage.name!r} reads {missing}, which no earlier stage writes")
        if not isinstance(stage.writes, dict):
            raise TypeError(f"stage {stage.name!r}: writes must map each column to its Arrow type (None: inferred)")
        available.update(stage.writes)
    return available


def rows_per_row(stages) -> int:
    """Rows a list of stages makes from one input row."""
    return math.prod(stage.rows_per_row() for stage in stages)


def apply_stages(ds: ray.data.Dataset, source, stages: list[Stage]) -> ray.data.Dataset:
    check_flow(source, stages)
    return apply_each(ds, stages)


def apply_each(ds: ray.data.Dataset, stages) -> ray.data.Dataset:
    """The stages as Ray Data operators, in order; a ``BatchStage.in_next_pool`` followed by an actor pool runs
    in that pool's actors."""
    stages = list(stages)
    for i, stage in enumerate(stages):
        following = stages[i + 1] if i + 1 < len(stages) else None
        if isinstance(stage, BatchStage) and stage.in_next_pool and isinstance(following, ActorStage):
            stages[i + 1] = replace(following, before=(*following.before, stage))
        else:
            ds = stage.apply(ds)
    return ds


def to_arrow(batch: pd.DataFrame, types: Columns) -> pa.Table:
    """``batch`` with the declared column types. Explicit types matter: a batch where every value is missing
    (no answer obtained, no expected number) would otherwise be inferred as Arrow's null type, and the Parquet
    shards of one dataset would disagree."""
    schema = pa.schema([(c, types.get(c) or pa.Array.from_pandas(batch[c]).type) for c in batch.columns])
    return pa.Table.from_pandas(batch, schema=schema, preserve_index=False)


def describe(stages: list[Stage]) -> list[dict[str, Any]]:
    """The data flow in one table, one row per stage (the README shows it)."""
    return [{"stage": s.name, "kind": s.kind, "reads": list(s.reads), "writes": list(s.writes)} for s in stages]
