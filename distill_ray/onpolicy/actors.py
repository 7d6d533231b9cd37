"""The actors of the on-policy loop, which live outside the training workers (no teacher in trainer memory):

- ``StudentSampler``: the current student sampling completions (hf or vllm); the trainer pushes new weights into
  it, which a vLLM sampler reloads in place.
- ``TeacherScorer``: one teacher model scoring the student's tokens (top-k log-probs at each position: one
  forward pass, not a generation).
- ``RolloutJudge``: the sandboxed verifier on the programs in the student's completions.

Each call returns its own wall time, so the loop can say where a step's time goes.
"""

from __future__ import annotations

import time
from types import SimpleNamespace

from distill_ray.teachers.base import SamplingSettings

SCORING_ENGINES = ("hf", "vllm")
SAMPLER_ENGINES = ("hf", "vllm")


class StudentSampler:
    """The student served by ``engine``: ``hf`` (transformers) or ``vllm`` (started with ``weight_updates``, so
    that a push reloads the weights into the running engine: ``VLLMEngine.load_weights``); ``options``: the
    engine's keyword arguments."""

    def __init__(self, model_dir: str, engine: str = "hf", options: dict | None = None):
        from distill_ray.teachers import make_engine

        if engine not in SAMPLER_ENGINES:
            raise ValueError(f"on_policy.sampler_engine {engine!r}: use one of {SAMPLER_ENGINES}")
        options = {**(options or {}), **({"weight_updates": True} if engine == "vllm" else {})}
        self.engine = make_engine(engine, model_dir, **options)
        self.version = 0      # the optimizer step whose weights these are (0: the initial student)

    def load_weights(self, state_dict: dict, version: int) -> float:
        """Replace the student's weights (a ``state_dict`` of the trained model) in the running engine; returns
        the seconds it took."""
        start = time.perf_counter()
        self.engine.load_weights(state_dict)
        self.version = version
        return time.perf_counter() - start

    def sample(self, prompts: list[str], n: int, temperature: float, max_new_tokens: int, seed: int) -> dict:
        """``n`` completions per prompt (prompt-major), each as the token ids the student wrote, ending with the
        end-of-turn token when it stopped by itself, so the teachers judge when to stop too."""
        start = time.perf_counter()
        settings = SamplingSettings(n=n, temperature=temperature, top_p=1.0, max_new_tokens=max_new_tokens,
                                    seed=seed)
        generations = [g for row in self.engine.generate(prompts, settings) for g in row]
        end_of_turn = self.engine.tokenizer.eos_token_id
        return {"token_ids": [list(g.token_ids) + ([end_of_turn] if g.finished else []) for g in generations],
                "texts": [g.text for g in generations], "version": self.version,
                "seconds": time.perf_counter() - start}


class TeacherScorer:
    """``engine``: ``hf`` or ``vllm`` (both have ``score``: a forward pass, or vLLM's prompt log-probs)."""

    def __init__(self, model: str, engine: str = "hf", options: dict | None = None):
        from distill_ray.teachers import make_engine

        if engine not in SCORING_ENGINES:
            raise ValueError(f"teacher engine {engine!r} cannot score the student's tokens: use one of "
                             f"{SCORING_ENGINES}")
        self.engine = make_engine(engine, model, **(options or {}))

    def score(self, prompts: list[str], rollout: dict, n: int, top_k: int) -> dict:
        """Top-k log-probs at each token of each completion of ``rollout`` (``n`` per prompt, prompt-major),
        each in the context of its problem's prompt in ``prompts`` (this teacher's rendering)."""
        start = time.perf_counter()
        contexts = [prompts[i // n] for i in range(len(rollout["token_ids"]))]
        scores = self.engine.score(contexts, rollout["token_ids"], top_k)
        return {"scores": scores, "seconds": time.perf_counter() - start}


class RolloutJudge:
    def __init__(self, limits: dict, workers: int = 1):
        from distill_ray.verify import SandboxLimits, Verifier

        self.verifier = Verifier(SandboxLimits(**limits), workers=workers)

    def judge(self, problems: list[dict], rollout: dict, n: int) -> dict:
        """Whether each completion's program passes its problem's check (``n`` completions per problem)."""
        from distill_ray.extract import extract_program
        from distill_ray.stages.verify import row_check

        start = time.perf_counter()
        checks = []
        for i, text in enumerate(rollout["texts"]):
            problem = problems[i // n]
            program = extract_program(problem["response_prefix"], text, problem["kind"])
            checks.append(row_check(SimpleNamespace(**problem, program=program)))
        verdicts = self.verifier.verify(checks)
        return {"passed": [v.passed for v in verdicts], "seconds": time.perf_counter() - start}

    def close(self) -> None:
        self.verifier.close()
