"""The per-worker loop of on-policy distillation, run by Ray Train (one DeepSpeed engine per worker).

Each step, on every worker: take this step's problems (seeded by step and rank), ask a sampler for the student's
completions, the teacher scorers for their distributions at each of its tokens and the judge for a verdict on
each program (the three are chained object refs: scoring and judging start as soon as the samples exist), then
one optimizer step on the divergence. The loop does not wait for that chain: step ``s + 1``'s rollouts are
requested before step ``s`` trains, so sampling, scoring and verifying overlap training, and a rollout is
sampled with weights one push behind (its ``staleness``, recorded per step, is the step it trains at minus the
step whose weights sampled it). Every ``sync_every`` steps rank 0 pushes the weights to the samplers through
Ray's object store, and no rank requests a rollout before the push has landed; a resumed run pushes its
restored weights before it samples. ``overlap: false`` is the strictly sequential loop (request after the push:
staleness 0 with ``sync_every: 1``), the baseline of ``benchmarks/on_policy_throughput.py``.
"""

from __future__ import annotations

import random
import time
from contextlib import nullcontext
from pathlib import Path

import torch
import torch.distributed as dist

from distill_ray.config import OnPolicyConfig
from distill_ray.onpolicy.loss import on_policy_loss
from distill_ray.onpolicy.rollouts import combine_teachers, rollout_batch, row_weights
from distill_ray.train.config import TrainSettings
from distill_ray.train.data import IGNORE_INDEX
from distill_ray.train.loop import (build_engine, configure_process, load_state, report_checkpoint, report_final,
                                    run_metrics)

STEP_TIMES = ("wait_s", "sample_s", "score_s", "verify_s", "train_s", "sync_s")   # averaged over the workers
STEP_PARTS = (*STEP_TIMES, "step_s")   # every timing in a step's record ("step_s": rank 0's whole iteration)


def on_policy_loop_per_worker(config: dict) -> dict:
    import ray.train

    settings = TrainSettings.model_validate(config["settings"])
    op = OnPolicyConfig.model_validate(config["on_policy"])
    configure_process(settings, config.get("torch_extensions_dir"))
    rank = ray.train.get_context().get_world_rank()
    actors = config["actors"]

    setup_start = time.perf_counter()
    checkpoint = ray.train.get_checkpoint()
    with checkpoint.as_directory() if checkpoint else nullcontext() as restored:
        restored = Path(restored) if restored else None
        engine, tokenizer = build_engine(config["init_dir"], settings, op.steps, restored)
        state = load_state(engine, restored)
    if restored:
        state.resumed_from.append(state.step)
        push_weights(engine, actors["samplers"], state.step, settings.zero_stage, rank)   # samplers re-synced
    setup_seconds = time.perf_counter() - setup_start

    rollouts = Rollouts(config["problems"], actors, op, settings, rank, tokenizer)
    pending = rollouts.request(state.step)
    engine.train()
    while state.step < op.steps:
        waited = time.perf_counter()
        result = rollouts.collect(pending)
        times = {"wait_s": time.perf_counter() - waited, **result.pop("times")}
        if op.overlap and state.step + 1 < op.steps:
            pending = rollouts.request(state.step + 1)     # overlaps the training step below
        started = time.perf_counter()
        loss = _train_step(engine, result["batch"], op, settings)
        times["train_s"] = time.perf_counter() - started
        record = _close_step(state, loss, result, times, started, engine.device, rank)
        if state.step % op.sync_every == 0 and state.step < op.steps:
            sync_start = time.perf_counter()
            push_weights(engine, actors["samplers"], state.step, settings.zero_stage, rank)
            record["sync_s"] = time.perf_counter() - sync_start
        if not op.overlap and state.step < op.steps:
            pending = rollouts.request(state.step)         # after the push: sampled with this step's weights
        record["step_s"] = time.perf_counter() - waited   # the whole iteration, wall clock (this rank)
        _log(state, record, settings, rank)
        if settings.fail_at_step == state.step and not state.resumed_from and rank == 0:
            raise RuntimeError(f"fail_at_step={state.step}: simulated worker failure")
        if settings.checkpoint_every and state.step % settings.checkpoint_every == 0 and state.step < op.steps:
            report_checkpoint(engine, state, rank)
    metrics = run_metrics(state, setup_seconds)
    report_final(engine, tokenizer, settings, state, metrics, rank)
    return metrics


class Rollouts:
    """Requests and collects one worker's rollouts: problems by a seeded draw, completions from its sampler,
    scores from every teacher, verdicts from the judge."""

    def __init__(self, problems: list[dict], actors: dict, op: OnPolicyConfig, settings: TrainSettings, rank: int,
                 tokenizer):
        self.problems, self.op, self.settings, self.rank = problems, op, settings, rank
        self.sampler = actors["samplers"][rank % len(actors["samplers"])]
        self.scorers, self.teacher_weights, self.judge = actors["scorers"], actors["teacher_weights"], actors["judge"]
        self.student_ids = tokenizer([p["student_prompt"] for p in problems], add_special_tokens=False)["input_ids"]
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id

    def request(self, step: int) -> dict:
        rng = random.Random(f"on-policy-{self.settings.seed}-{step}-{self.rank}")
        picked = rng.sample(range(len(self.problems)), min(self.op.prompts_per_step, len(self.problems)))
        problems = [self.problems[i] for i in picked]
        n = self.op.samples
        sample = self.sampler.sample.remote([p["student_prompt"] for p in problems], n, self.op.temperature,
                                            self.op.max_new_tokens, rng.getrandbits(31))
        scores = [scorer.score.remote([p["teacher_prompts"][t] for p in problems], sample, n, self.op.top_k)
                  for t, scorer in enumerate(self.scorers)]
        verdict = self.judge.judge.remote([p["check"] for p in problems], sample, n)
        return {"picked": picked, "sample": sample, "scores": scores, "verdict": verdict, "step": step}

    def collect(self, pending: dict) -> dict:
        import ray

        sample, verdict = ray.get([pending["sample"], pending["verdict"]])
        scores = ray.get(pending["scores"])
        n = self.op.samples
        completions = sample["token_ids"]
        teacher_topk = [combine_teachers([s["scores"][i] for s in scores], self.teacher_weights, self.op.top_k)
                        for i in range(len(completions))]
        passed = verdict["passed"]
        prompt_ids = [self.student_ids[pending["picked"][i // n]] for i in range(len(completions))]
        batch = rollout_batch(prompt_ids, completions, teacher_topk,
                              row_weights(passed, self.op.verifier, self.op.wrong_weight), passed,
                              self.settings.max_length, self.pad_id)
        return {"batch": batch, "passed": sum(passed), "completions": len(completions),
                "staleness": pending["step"] - sample["version"],
                "times": {"sample_s": sample["seconds"], "score_s": sum(s["seconds"] for s in scores),
                          "verify_s": verdict["seconds"]}}


def _train_step(engine, batch: dict, op: OnPolicyConfig, settings: TrainSettings):
    """One optimizer step on this worker's rollouts; every completion token of the global batch weighs the same
    (DeepSpeed averages gradients over the workers, hence the global count / world size)."""
    world = dist.get_world_size()
    tokens = torch.tensor([float((batch["labels"] != IGNORE_INDEX).sum())], dtype=torch.float64, device=engine.device)
    dist.all_reduce(tokens)
    batch = {k: v.to(engine.device) for k, v in batch.items()}
    loss = on_policy_loss(engine, batch, op.beta, op.sft_weight, max(float(tokens.item()), 1.0) / world)
    engine.backward(loss.loss, scale_wrt_gas=False)
    engine.step()
    return loss


def _close_step(state, loss, result: dict, times: dict, started: float, device, rank: int) -> dict:
    """Fold the step's sums from all workers into the state; the step's record for the history."""
    sums = torch.tensor([loss.total, loss.tokens, loss.reverse_kl, result["passed"], result["completions"],
                         result["staleness"], *(times.get(name, 0.0) for name in STEP_TIMES)],
                        dtype=torch.float64, device=device)
    dist.all_reduce(sums)
    total, tokens, reverse_kl, passed, completions, staleness, *summed_times = sums.tolist()
    world = dist.get_world_size()
    state.step += 1
    state.loss_history.append(total / max(tokens, 1))
    state.samples += int(completions)
    state.tokens += int(tokens)
    state.seconds += time.perf_counter() - started + times["wait_s"]
    record = {"step": state.step, "loss": state.loss_history[-1], "reverse_kl": reverse_kl / max(tokens, 1),
              "verified": passed / max(completions, 1), "staleness": staleness / world,
              **{name: value / world for name, value in zip(STEP_TIMES, summed_times)}}
    state.history.append(record)
    return record


def _log(state, record: dict, settings: TrainSettings, rank: int) -> None:
    if rank == 0 and settings.log_every and state.step % settings.log_every == 0:
        print(f"[on-policy] step {state.step} loss {record['loss']:.4f} reverse KL {record['reverse_kl']:.4f} "
              f"verified {record['verified']:.2f} staleness {record['staleness']:.1f} "
              + " ".join(f"{k} {record[k]:.2f}" for k in STEP_TIMES), flush=True)


def push_weights(engine, samplers: list, version: int, zero_stage: int, rank: int) -> None:
    """Rank 0 puts the student's weights in the object store once and loads them into every sampler. Every rank
    calls it: under ZeRO-3 gathering the partitioned weights is a collective."""
    import deepspeed
    import ray

    model = engine.module
    gather = (deepspeed.zero.GatheredParameters(list(model.parameters()), modifier_rank=None)
              if zero_stage == 3 else nullcontext())
    with gather:
        if rank == 0:
            weights = ray.put({name: tensor.detach().to("cpu", torch.float32).clone()
                               for name, tensor in model.state_dict().items()})
            ray.get([sampler.load_weights.remote(weights, version) for sampler in samplers])
    # No rank requests a rollout before the push has landed: a request queued ahead of it would sample with older
    # weights than the step it trains at allows (staleness above sync_every).
    dist.barrier()
