"""What a check's time budget (``timeout_s``) means, in one place for the caller, the worker and the zygotes.

``timeout_s`` is CPU time: what the candidate and every process it starts use, summed (a p3 sat's judge gets as
much again; for asserts the candidate and the tests' judge share it). CPU time does not grow while a process waits
for a core, so a verdict does not depend on how loaded the machine is. A program that sleeps or blocks uses no
CPU, so the wall clock is capped too, at ``wall_cap(timeout_s)``; the clock starts when the process is forked
(not when its check was queued). Both paths measure it alike: sandbox.tree_cpu (Python) and zygote.c's tree_cpu.
No imports: the worker imports this, and every candidate fork copies what the worker holds.
"""

WALL_FACTOR = 3.0
WALL_SLACK_S = 1.0


def wall_cap(timeout_s: float) -> float:
    """The wall-clock limit of a process (candidate or judge) whose CPU budget is timeout_s."""
    return WALL_FACTOR * float(timeout_s) + WALL_SLACK_S
