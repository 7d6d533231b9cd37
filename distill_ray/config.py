"""Typed configuration: a YAML file validated by pydantic, with dotted ``key=value`` overrides.

Every field documents itself (``Field(description=...)``); the README's config reference is generated
from these models (``distill-ray config-reference``). Validation happens here, at the edge: the rest of
the code receives plain values.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid")  # a misspelt key is an error, not a silent default


class RayConfig(Section):
    address: str | None = Field(None, description="Ray cluster to join; null starts a local cluster "
                                "(or joins the one named by RAY_ADDRESS).")
    num_cpus: int | None = Field(None, description="CPUs of the local cluster (null: all of this machine's).")


class TaskConfig(Section):
    source: Literal["puzzles", "gsm8k", "p3", "humaneval", "mbpp", "jsonl", "table"] = Field(
        "puzzles", description="Problem source: our procedural P3-style puzzles, GSM8K program-of-thought, real "
        "P3 puzzles, HumanEval (evaluation only: it has no train split), MBPP (its prompt split, task ids 1-10, "
        "is the exemplar pool), your own problems as JSON lines, or a table (Parquet, JSONL, CSV or a datasets "
        "folder's Arrow files) read by Ray Data chunk by chunk (see README, 'Your own problems').")
    path: str | None = Field(None, description="Directory of the data files (gsm8k, p3, humaneval, mbpp), the "
                             ".jsonl file (jsonl), or the table's file or folder (table); unused for puzzles.")
    columns: dict[str, str] = Field({}, description="table: problem key -> the table's column (e.g. {question: "
                                    "problem, expected: answer}); keys the table has under their own name need "
                                    "none. Keys: id, kind, question, expected, sat, ans_type, tests, entry_point, "
                                    "split, family, difficulty, reference.")
    kind: Literal["p3", "gsm8k", "asserts"] | None = Field(None, description="table: the kind of rows that have "
                                                            "no kind column.")
    num_train: int = Field(32, ge=1, description="Problems the teachers solve to build the training set.")
    num_eval: int = Field(16, ge=1, description="Held-out problems for evaluation (disjoint from train).")
    difficulty: int = Field(1, ge=1, le=3, description="Puzzle difficulty, 1 (trivial) to 3.")
    families: list[str] | None = Field(None, description="Puzzle families to use (null: all): ours for source "
                                       "puzzles, P3's for source p3; other sources have none and ignore it.")
    decontaminate: bool = Field(True, description="Drop (and quarantine) every train problem and few-shot "
                                "exemplar whose text is an evaluation problem's, exactly or nearly (see "
                                "tasks/decontaminate.py); the dataset manifest counts them. Puzzles are disjoint "
                                "from their eval split by construction.")
    near_duplicate_threshold: float = Field(0.8, gt=0, le=1, description="Estimated Jaccard similarity of word "
                                            "3-grams from which a problem counts as a near-duplicate.")
    max_question_chars: int = Field(16_000, ge=1, description="Longer questions in a jsonl source are "
                                    "quarantined instead of prompted.")


class PromptConfig(Section):
    num_shots: int = Field(3, ge=0, description="Few-shot exemplars in each teacher prompt.")
    pool_size: int = Field(42, ge=0, description="Train-split problems reserved as the exemplar pool (never "
                           "solved by the teacher nor trained on); GSM8K uses its hand-written exemplars.")
    exemplars: Literal["fixed", "random", "retrieved", "learned"] = Field(
        "retrieved", description="Same exemplars for every prompt, drawn per prompt (seeded), retrieved: "
        "the most similar train problems (same family first, then BM25), or learned: the top ones by the dense "
        "retriever in `prompt.retriever`, trained from the teacher's likelihoods (EPR; `distill-ray retriever`).")
    retriever: str | None = Field(None, description="Directory of a trained retriever (retriever.json + "
                                  "retriever.npz, written by `distill-ray retriever --out DIR`); needed by "
                                  "`exemplars: learned`.")

    @model_validator(mode="after")
    def _learned_needs_retriever(self):
        if self.exemplars == "learned" and not self.retriever:
            raise ValueError("prompt.exemplars 'learned' needs prompt.retriever (the directory `distill-ray "
                             "retriever --out DIR` wrote)")
        return self


class SamplingConfig(Section):
    samples: int = Field(4, ge=1, description="Candidates sampled per prompt (n).")
    temperature: float = Field(0.8, ge=0.0, description="Sampling temperature (0 = greedy).")
    top_p: float = Field(0.95, gt=0.0, le=1.0, description="Nucleus sampling mass.")
    max_new_tokens: int = Field(48, ge=1, description="Token budget per candidate.")


class TeacherConfig(SamplingConfig):
    name: str = Field("smollm2", description="Name recorded in every candidate row's `teacher` column (unique "
                      "per job).")
    engine: Literal["hf", "vllm", "openai", "replay"] = Field(
        "hf", description="Generation engine (hf = transformers). replay is a benchmark engine, not a teacher: "
        "no model, it serves the completions of an earlier `distill-ray generate` dataset (model: its directory) "
        "or each problem's reference (model: references), to measure the pipeline's own overhead (see README, "
        "'Teacher engines').")
    model: str = Field("smollm2", description="'smollm2' or 'gemma3' (the embedded SmolLM2-135M-Instruct and "
                       "Gemma-3-270M GGUFs), a .gguf file, or a Hugging Face model directory.")
    prompt_style: Literal["chat", "plain"] = Field(
        "chat", description="chat: the model's chat template (instruct models); plain: few-shot text without "
        "a template (base models).")
    weight: float = Field(1.0, gt=0, description="This teacher's weight in the cross-teacher soft label.")
    top_k_logprobs: int = Field(0, ge=0, le=20, description="Store the k most likely tokens' logprobs per "
                                "generated token (`logprobs` column); the kd/swing objectives then read them "
                                "for rows of a teacher that shares the student's vocabulary instead of running "
                                "the teacher in the trainer (0: not stored).")
    batch_size: int = Field(8, ge=1, description="Prompts per generate() call.")
    actors: int = Field(1, ge=1, description="Engine replicas (Ray actors) in the teacher pool.")
    cpus_per_actor: float = Field(1.0, gt=0, description="CPUs reserved per teacher actor.")
    actor_memory_gib: float | Literal["auto"] | None = Field(
        "auto", description="Memory Ray reserves per teacher actor, so that a cluster never packs more engines on "
        "a node than fit: GiB, or 'auto' (twice the model's weights + 0.5 GiB: 1.5 for SmolLM2-135M, 2.5 for "
        "Gemma-3-270M; 0.5 for the openai and replay engines, which hold no weights). Null: none.")
    gpus_per_actor: float = Field(0.0, ge=0, description="GPUs per teacher actor.")
    resources: dict[str, float] = Field({}, description="Custom Ray resources each teacher actor needs, e.g. "
                                        "{teacher_node: 1}: the pool runs only on nodes started with them "
                                        "(`ray start --resources`), and a lost node's actors restart on another.")
    torch_threads: int | None = Field(None, ge=1, description="torch threads per actor (null: torch default).")
    engine_options: dict = Field({}, description="Extra keyword arguments for the engine's constructor "
                                 "(e.g. base_url, api_key_env for openai).")


class VerifyConfig(Section):
    timeout_s: float = Field(2.0, gt=0, description="CPU-time budget per candidate (module top level + call, and "
                             "every process it starts); wall clock capped at 3x + 1 s.")
    memory_mb: int = Field(512, ge=64, description="Address-space limit per candidate process.")
    actors: int = Field(1, ge=1, description="Verifier actors.")
    cpus_per_actor: float = Field(0.5, gt=0, description="CPUs reserved per verifier actor.")
    actor_memory_gib: float | None = Field(0.5, gt=0, description="Memory Ray reserves per verifier actor (the "
                                           "actor and its sandbox workers; each candidate is capped by memory_mb "
                                           "on its own). Null: none.")
    workers_per_actor: int = Field(2, ge=1, description="Sandbox processes run in parallel by each actor.")
    resources: dict[str, float] = Field({}, description="Custom Ray resources each verifier actor needs (as "
                                        "teacher.resources): e.g. {verifier_node: 1} keeps candidates' code off "
                                        "the nodes that serve the teachers.")
    batch_size: int = Field(32, ge=1, description="Candidates per verifier call.")
    dedupe: bool = Field(True, description="Run a check that repeats one earlier in the same call once (a teacher's "
                         "samples of a problem often agree word for word); its repeats share the verdict.")


class VoteConfig(Section):
    require_majority: bool = Field(False, description="Keep only verified samples whose answer is the "
                                   "prompt's majority answer.")


class CriticConfig(Section):
    path: str | None = Field(None, description="A critic directory written by `distill-ray critic`: generate "
                             "then scores every candidate (critic_score, critic_accept) and, where no verifier can "
                             "decide (unlabelled gsm8k), the vote counts and keeps only the candidates it accepts.")
    resample_rounds: int = Field(0, ge=0, description="With a critic: each candidate it rejects is sampled again "
                                 "by its teacher, up to this many times, keeping its best-scored attempt (the "
                                 "`attempts` column); 0: no resampling. The dataset only, never an evaluation.")
    target_precision: float = Field(0.9, gt=0, le=1, description="`distill-ray critic`: the acceptance threshold "
                                    "accepts the most passing held-out verified rows at this precision or more.")
    held_out: float = Field(0.4, gt=0, lt=1, description="`distill-ray critic`: share of the problems held out "
                            "(half to choose the threshold, half to report on); none of their rows is trained on.")
    hash_bits: int = Field(16, ge=8, le=24, description="`distill-ray critic`: 2**bits hashed n-gram features.")
    l2: float = Field(1e-3, ge=0, description="`distill-ray critic`: L2 penalty on the weights.")


class GalConfig(Section):
    prompts: int = Field(0, ge=0, description="GAL (generate, annotate, learn): prompts asking each teacher to "
                         "write new train problems in the task's format (gsm8k questions, p3 puzzles) from "
                         "`gal.shots` real train problems; kept ones are annotated by the teachers and the vote "
                         "like unlabelled problems and trained on beside the real ones (see README, 'Several "
                         "teachers'). 0: off.")
    samples: int = Field(4, ge=1, description="New problems each teacher writes per GAL prompt.")
    shots: int = Field(3, ge=1, description="Real train problems shown in each GAL prompt (of one family, where "
                       "the task has families).")
    temperature: float = Field(1.0, ge=0.0, description="Sampling temperature of the GAL writers (high: varied "
                               "problems; duplicates are dropped anyway).")
    max_new_tokens: int = Field(160, ge=1, description="Token budget per written problem (real GSM8K "
                                "questions: 95% within 101 SmolLM2 tokens, 99.75% within 160).")


class MixupConfig(Section):
    pairs: int = Field(0, ge=0, description="LM mix-up with soft labels (GPT3Mix): prompts showing each teacher "
                       "two different real train problems (of one family, where the task has families) and asking "
                       "for one new problem that blends them; kept ones (GAL's parse, dedupe and decontamination) "
                       "are annotated by the teachers and the vote with a soft label: each kept program weighs its "
                       "teacher-weighted share of the problem's samples (train with objective `soft`; see README, "
                       "'Several teachers'). 0: off.")
    samples: int = Field(4, ge=1, description="New problems each teacher writes per mix-up pair.")
    temperature: float = Field(1.0, ge=0.0, description="Sampling temperature of the mix-up writers.")
    max_new_tokens: int = Field(160, ge=1, description="Token budget per blended problem (as `gal.max_new_tokens`).")


Objective = Literal["sft", "soft", "kd", "swing", "icl", "mlm", "rkd_distance", "rkd_angle", "knife_teacher", "knife"]


def _check_weights(objectives: dict, where: str) -> None:
    if not any(w > 0 for w in objectives.values()) or any(w < 0 for w in objectives.values()):
        raise ValueError(f"{where} needs non-negative weights, one > 0: {objectives}")


class MoeConfig(Section):
    """A mixture-of-experts student, upcycled from the dense one (``train/moe.py``)."""

    experts: int = Field(0, ge=0, description="Experts per MoE layer: each of the student's MLPs becomes this "
                         "many copies of itself behind a learned router (sparse upcycling; a Mixtral model), before "
                         "task training; 0: the dense student.")
    top_k: int = Field(1, ge=1, description="Experts each token is routed to: 1 runs as many parameters per token "
                       "as the dense student (but Mixtral's renormalised top-1 weight is always 1, so only the "
                       "load-balancing loss trains the router), k runs k MLPs.")
    aux_loss_weight: float = Field(0.01, ge=0, description="Weight of the routers' load-balancing loss (Switch "
                                   "Transformer's), per target token, added to whatever objectives are trained.")

    @model_validator(mode="after")
    def _valid(self):
        if self.experts == 1:
            raise ValueError("train.moe.experts 1 is the dense student with a router; use 0 or >= 2")
        if self.experts and self.top_k > self.experts:
            raise ValueError(f"train.moe.top_k {self.top_k} > experts {self.experts}")
        return self


class StageConfig(Section):
    """One phase of a staged run (``train.stages``): its own objectives, data and length, started from the
    previous stage's student (PanGu-Coder: causal LM on raw code, then sft + mlm on problem/solution pairs)."""

    name: str = Field("", description="Label in logs and the result (empty: stage<i>).")
    objectives: dict[Objective, float] = Field(description="Objective -> weight of this stage (as "
                                               "train.objectives).")
    data: Literal["dataset", "raw_code"] = Field("dataset", description="dataset: the run's training rows; "
                                                 "raw_code: Python standard-library source snippets (empty prompt, "
                                                 "the code as target: causal LM on raw code), as many as max_steps optimizer steps read.")
    max_steps: int | None = Field(None, ge=1, description="Optimizer steps of this stage (raw_code needs it); null: "
                                  "its epochs.")
    epochs: int = Field(1, ge=1, description="Passes over the stage's data (unless max_steps ends it first).")
    lr: float | None = Field(None, gt=0, description="This stage's learning rate (null: train.lr).")

    @model_validator(mode="after")
    def _valid(self):
        _check_weights(self.objectives, f"train.stages[{self.name or '?'}].objectives")
        if self.data == "raw_code" and not self.max_steps:
            raise ValueError("a raw_code stage needs max_steps (how many snippets to draw)")
        return self


class CompressConfig(Section):
    """Sparse + quantized students (``train.compress``, ``train/compress.py``): prune the decoder's Linear
    weights during training, then quantization-aware training to int8, and export an int8 model."""

    sparsity: float = Field(0.0, ge=0, lt=1, description="Target share of zero weights in every decoder Linear "
                            "(attention and MLP projections; embeddings, norms and lm_head stay dense), reached by "
                            "gradual magnitude pruning during training; pruned weights stay zero (0: no pruning).")
    prune_steps: int | None = Field(None, ge=1, description="Optimizer steps over which the sparsity rises to the "
                                    "target on a cubic schedule (then the masks are fixed); null: until QAT starts "
                                    "(or the run's last step).")
    qat_steps: int = Field(0, ge=0, description="The run's last optimizer steps run the pruned Linears on int8 "
                           "fake-quantized weights (per output channel) and activations (per token), with "
                           "straight-through gradients (0: no QAT).")
    export_int8: bool = Field(False, description="Also write the student as int8 weights + per-channel scales "
                              "to <student>/int8 (loaded by distill_ray.train.int8.load_int8, run with int8 "
                              "matmuls).")

    @property
    def active(self) -> bool:
        """Whether training changes anything (export alone quantizes after training)."""
        return bool(self.sparsity or self.qat_steps)


class TrainConfig(Section):
    enabled: bool = Field(True, description="Train a student (false: stop after the dataset).")
    mode: Literal["offline", "on_policy"] = Field(
        "offline", description="offline: train on the dataset's kept candidates (objectives); on_policy: the student "
        "samples, the teachers score its tokens, the verifier judges, and it minimises the divergence on its own "
        "samples (the on_policy section).")
    student: str = Field("teacher", description="The student's starting model: 'teacher' (the first teacher's "
                         "own model: the teacher *system* of few-shot prompts, n samples, a verifier and a vote is "
                         "distilled into a zero-shot, one-sample model), 'smollm2' or 'gemma3', a .gguf file, or a "
                         "Hugging Face model directory. A student with another tokenizer than a teacher trains on "
                         "that teacher's rows with the sequence-level objectives only (sft, soft, icl).")
    student_layers: int | None = Field(None, ge=1, description="Cut the student to this many of its model's layers "
                                       "(the first half and the last half of them); null keeps every layer.")
    heal_steps: int = Field(0, ge=0, description="For a cut student: optimizer steps of kd from its full model on "
                            "general text (Python standard-library source) before task training, so it starts as "
                            "a language model (0: no healing).")
    heal_lr: float = Field(5e-4, gt=0, description="Learning rate of the healing phase.")
    workers: int = Field(2, ge=1, description="Ray Train workers.")
    cpus_per_worker: float = Field(0.5, gt=0, description="CPUs per worker (fractional leaves room for Ray "
                                   "Data's read tasks).")
    use_gpu: bool = Field(False, description="Train on GPUs.")
    gradient_checkpointing: bool = Field(False, description="Recompute activations in backward instead of "
                                         "storing them (large students: less memory, ~30% more compute).")
    max_failures: int = Field(0, ge=0, description="Ray Train worker-group restarts from the last checkpoint (a "
                              "killed worker or node); 0: a failure ends the run.")
    checkpoint_every: int | None = Field(None, ge=1, description="Optimizer steps between checkpoints a restart "
                                         "resumes from (null: only the final one).")
    keep_checkpoints: int = Field(2, ge=1, description="Checkpoints kept in storage (Ray Train's num_to_keep).")
    tensorboard: bool = Field(True, description="Write the run's loss per step and its throughput as TensorBoard "
                              "event files to <output>/tensorboard/<student folder> (a Ray Train callback).")
    storage_path: str | None = Field(None, description="Ray Train storage for checkpoints; on a multi-node "
                                     "cluster a path every node shares (NFS, s3://...). Null: under output_dir, "
                                     "removed once the student is exported (its last checkpoint is the student).")
    zero_stage: Literal[0, 1, 2, 3] = Field(2, description="DeepSpeed ZeRO stage (0: plain data parallel; 3 "
                                            "partitions the weights too).")
    epochs: int = Field(3, ge=1, description="Passes over the verified samples.")
    batch_size: int = Field(4, ge=1, description="Micro-batch per worker.")
    grad_accum: int = Field(1, ge=1, description="Gradient accumulation steps.")
    lr: float = Field(1e-4, gt=0, description="Peak learning rate (AdamW).")
    warmup_steps: int = Field(0, ge=0, description="Linear warm-up steps.")
    max_length: int = Field(384, ge=16, description="Tokens per training row (prompt + target).")
    max_steps: int | None = Field(None, ge=1, description="Stop after this many optimizer steps.")
    objectives: dict[Objective, float] = Field(
        {"sft": 1.0}, description="Objective -> weight; the loss is the weighted sum (e.g. {sft: 1.0, kd: 0.5}). "
        "sft: completion cross-entropy; soft: rows weighted by their vote share (label_weight); kd: token KL "
        "to the teacher; swing: privacy-aware kd; icl: targets after in-batch demonstrations; mlm: span "
        "infilling (a span of the target masked, written after the sequence); rkd_distance, rkd_angle: "
        "relational KD on the pairwise structure of the batch's embeddings (teacher model needed); knife_teacher: "
        "KNIFE's teacher, cross-entropy on the target of [rationale, input, target] rows whose target may not attend "
        "to the rationale (rows need rationale_text); knife: KNIFE, the MSE between the student's hidden states of "
        "the input and target tokens and such a teacher's (teacher_dir; rows need rationale_text).")
    stages: list[StageConfig] = Field([], description="Train in phases, in order, each from the previous one's "
                                      "student with its own objectives, data and steps (then train.objectives, "
                                      "epochs and max_steps are unused), e.g. [{data: raw_code, objectives: {sft: "
                                      "1}, max_steps: 20}, {objectives: {sft: 1, mlm: 1}}]; empty: one phase.")
    mlm_span: float = Field(0.3, gt=0, le=1, description="mlm: the masked span's share of each target's tokens "
                            "(one contiguous span, its start drawn per row, seeded).")
    kd_temperature: float = Field(2.0, gt=0, description="Temperature T of kd (loss scaled by T^2); swing's "
                                  "temperature on non-private tokens.")
    swing_max_temperature: float = Field(8.0, gt=0, description="swing's temperature on surely-private tokens "
                                         "(it rises linearly with a token's privacy score).")
    swing_noise: float = Field(1.0, ge=0, description="Std of the Gaussian noise swing adds to the tempered "
                               "teacher logits (seeded).")
    privacy_scorer: Literal["regex", "list", "likelihood"] = Field(
        "regex", description="How swing scores a target token's privacy: regex (emails and runs of >= 4 digits "
        "built in, plus privacy_patterns), list (the exact strings in privacy_terms), likelihood (tokens the "
        "teacher predicts far more confidently than the rest of their row).")
    privacy_patterns: list[str] = Field([], description="Extra regexes whose matches the regex privacy scorer "
                                        "treats as private (emails and runs of >= 4 digits are built in).")
    privacy_terms: list[str] = Field([], description="Exact, case-sensitive strings (names, known secrets) the "
                                     "list privacy scorer treats as private.")
    icl_shots: int = Field(2, ge=0, description="Demonstrations (other rows of the micro-batch) before each icl "
                           "input.")
    knife_layers: list[int] = Field([-1], min_length=1, description="knife: the hidden states matched, as indexes "
                                    "into each model's own (0: the embeddings, -1: the last layer's output), averaged.")
    compress: CompressConfig = CompressConfig()
    moe: MoeConfig = MoeConfig()

    @model_validator(mode="after")
    def _objective_weights(self):
        _check_weights(self.objectives, "train.objectives")
        return self

    @model_validator(mode="after")
    def _moe_offline(self):
        if self.moe.experts and self.mode == "on_policy":
            raise ValueError("train.moe upcycles the student of offline training; on_policy trains a dense one")
        return self

    @model_validator(mode="after")
    def _privacy_terms(self):
        if self.privacy_scorer == "list" and not any(self.privacy_terms):
            raise ValueError("train.privacy_scorer 'list' needs train.privacy_terms (it would flag nothing)")
        return self

    @model_validator(mode="after")
    def _compress_needs_whole_weights(self):
        if self.compress.active and self.zero_stage == 3:
            raise ValueError("train.compress needs whole weight matrices on each worker: ZeRO-3 partitions them "
                             "(use zero_stage 0, 1 or 2)")
        if self.compress.active and self.mode == "on_policy":
            raise ValueError("train.compress applies to offline training (train.mode: offline)")
        return self


class OnPolicyConfig(Section):
    steps: int = Field(20, ge=1, description="Optimizer steps of on-policy distillation.")
    prompts_per_step: int = Field(4, ge=1, description="Problems each training worker samples per step.")
    samples: int = Field(2, ge=1, description="Student completions per problem.")
    temperature: float = Field(1.0, gt=0, description="The student's sampling temperature.")
    max_new_tokens: int = Field(48, ge=1, description="Token budget per student completion.")
    top_k: int = Field(20, ge=1, le=200, description="Teacher log-probs scored at each student token (its k most "
                       "likely tokens); the divergence is k-way over them (several teachers: over their union).")
    beta: float = Field(1.0, ge=0, le=1, description="GKD's generalised JSD: 1 = reverse KL(student || teacher), "
                        "the on-policy distillation loss; 0 = forward KL; between: the beta-mixture JSD.")
    teacher_context: Literal["few_shot", "zero_shot"] = Field(
        "few_shot", description="The prompt the teachers score the student's tokens in: their few-shot prompt "
        "(prompt section) or the student's own zero-shot one.")
    sync_every: int = Field(1, ge=1, description="Optimizer steps between pushes of the student's weights to "
                            "the samplers (the step after a push samples with them; staleness is recorded).")
    overlap: bool = Field(True, description="Request the next step's rollouts before training on this step's, so "
                          "sampling, scoring and verifying overlap training (samples one push behind); false: each "
                          "step samples with the weights of the step before it, strictly in turn.")
    verifier: Literal["none", "weight", "filter"] = Field(
        "weight", description="How the verifier's verdict enters the loss: none; weight (a rejected completion's "
        "divergence counts wrong_weight); filter (rejected completions are left out).")
    wrong_weight: float = Field(0.1, ge=0, le=1, description="Weight of a rejected completion with verifier=weight.")
    sft_weight: float = Field(0.0, ge=0, description="Cross-entropy on the student's own verified completions, "
                              "added to the divergence (0: none).")
    teachers: list[str] | None = Field(None, description="Names of the teachers that score the student's tokens "
                                       "(null: every teacher); each must have the student's tokenizer.")
    samplers: int = Field(1, ge=1, description="Student sampler actors (the training workers share them).")
    sampler_engine: Literal["hf", "vllm"] = Field(
        "hf", description="What serves the student's samples: hf (transformers) or vllm (where installed: "
        ".venv-vllm on CPU, the gpu extra on CUDA); a weight push reloads the weights into the running engine (no "
        "restart) and resets its prefix cache.")
    sampler_options: dict = Field({}, description="The sampler engine's keyword arguments, over its defaults (hf: "
                                  "torch_threads 1; vllm: dtype float32, cpu_threads 1, kv_cache_gib 1).")
    actor_cpus: float = Field(0.25, gt=0, description="CPUs reserved per sampler, teacher scorer and verifier "
                              "actor.")


class EvalConfig(Section):
    samples: int = Field(4, ge=1, description="Samples per eval problem (n of pass@k).")
    k: list[int] = Field([1, 2, 4], description="The k of pass@k; each must be <= samples.")
    temperature: float = Field(0.8, ge=0.0, description="Sampling temperature at evaluation.")
    max_new_tokens: int = Field(48, ge=1, description="Token budget per eval sample.")
    models: list[Literal["teacher", "student_init", "student"]] = Field(
        ["teacher", "student_init", "student"],
        description="What to evaluate: the teacher (few-shot), the student before and after training (zero-shot).")

    @model_validator(mode="after")
    def _k_within_samples(self):
        too_big = [k for k in self.k if k > self.samples or k < 1]
        if too_big:
            raise ValueError(f"eval.k {too_big} must be between 1 and eval.samples={self.samples}")
        return self


class ExperimentConfig(Section):
    arms: list[Literal["none", "unfiltered", "verified", "verified_soft", "verified_kd", "expert_iteration",
                       "on_policy", "on_policy_verified"]] = Field(
        ["none", "unfiltered", "verified", "verified_soft", "expert_iteration"],
        description="Arms of `distill-ray experiment` (see README, 'The EKT experiment').")
    seeds: list[int] = Field([0, 1], min_length=1, description="Seeds: each arm is drawn, trained and evaluated "
                             "once per seed.")
    budget: int | None = Field(None, ge=1, description="Training rows per arm (null: the smallest pool among "
                               "unfiltered, verified and verified_soft).")
    expert_rounds: int = Field(2, ge=1, description="Rounds of the expert_iteration arm: each round's student "
                               "(the first: the untrained one) samples the train problems, its new verified programs "
                               "join the pool, and a fresh student is trained on the pool.")


class DecomposeConfig(Section):
    min_steps: int = Field(2, ge=1, description="`distill-ray decompose`: sub-questions a verified teacher "
                           "decomposition needs to become one decomposer row and one solver row (a one-step "
                           "decomposition decomposes nothing).")
    arms: list[Literal["decomposed", "single"]] = Field(
        ["decomposed", "single"], min_length=1, description="`distill-ray decompose`'s arms, each trained on the "
        "same verified decompositions and evaluated by pass@k: decomposed (a decomposer student writes "
        "sub-questions, a solver student the program from problem + sub-questions), single (one CoT/program "
        "student writes both). See README, 'Decompositional distillation'.")

    @model_validator(mode="after")
    def _distinct_arms(self):
        if len(set(self.arms)) != len(self.arms):
            raise ValueError(f"decompose.arms must not repeat an arm: {self.arms}")
        return self


DiscoArm = Literal["student", "teacher", "distilled", "distilled_contrastive", "distilled_contrastive_kd",
                  "contrastive", "contrastive_kd"]


class DiscoConfig(Section):
    """`distill-ray disco`: a sentence-embedding student distilled from a teacher's pooled states (DisCo)."""
    student_layers: int = Field(4, ge=1, description="The student: `teacher.model` cut to this many layers "
                                "(`train.student_layers`' cut), mean-pooled, then a linear head (identity at start).")
    teacher_head_steps: int = Field(200, ge=0, description="The teacher stand-in: `teacher.model`'s frozen "
                                    "mean-pooled last hidden state, then a linear head trained this many in-batch "
                                    "InfoNCE steps on the labelled train pairs (0: the raw pooled state). No "
                                    "sentence-embedding model ships; see README, 'Sentence-embedding students'.")
    teacher_head_lr: float = Field(1e-3, gt=0, description="Learning rate of the teacher's head.")
    train_per_family: int = Field(4, ge=2, description="Train-split puzzles per seen family and difficulty (1 to 3): "
                                  "the unlabelled texts of phase 1 and the pool of phase 2's pairs.")
    eval_per_family: int = Field(2, ge=1, description="Eval-split puzzles per family and difficulty, never a train "
                                 "text, from which the eval pairs are drawn.")
    eval_pairs: int = Field(60, ge=1, description="Eval pairs per label (2 same family, 1 same topic, 0 another "
                            "topic) in each eval split (seen families, unseen families); the score is Spearman's rho "
                            "between their cosine similarity and the label.")
    unseen_families: int = Field(8, ge=2, description="Families held out of all training (even: two from each of "
                                 "the topics with four or more families), scored as the `unseen` split.")
    distill_steps: int = Field(20, ge=1, description="Phase 1: optimizer steps of embedding distillation on the "
                               "unlabelled train texts.")
    distill_mse: float = Field(1.0, ge=0, description="Phase 1: weight of the MSE between the student's and the "
                               "teacher's embeddings.")
    distill_cosine: float = Field(1.0, ge=0, description="Phase 1: weight of 1 - their cosine similarity.")
    contrastive_steps: int = Field(12, ge=1, description="Phase 2: optimizer steps of contrastive fine-tuning on "
                                   "pairs of one family, the batch's other positives the negatives.")
    contrastive_kd: float = Field(1.0, gt=0, le=1, description="Phase 2 of the `*_contrastive_kd` arms: weight of "
                                  "the contrastive-KD term (the teacher's in-batch similarities as soft targets); "
                                  "the rest of the weight stays on plain InfoNCE (1: soft targets only).")
    temperature: float = Field(0.05, gt=0, description="The student's temperature in InfoNCE and contrastive KD.")
    teacher_temperature: float = Field(0.2, gt=0, description="The teacher's temperature for the soft targets. "
                                       "The teacher's head is trained on the same pairs, so at 0.05 its in-batch "
                                       "softmax puts 0.99 on each positive (contrastive KD is then plain InfoNCE); "
                                       "at 0.2, 0.64, and the negatives of the anchor's topic get 0.11 (0.04 if "
                                       "spread evenly): the graded similarity the soft targets are to carry.")
    train_embeddings: bool = Field(False, description="Also train the student's token embeddings (false: frozen, "
                                   "28M of the 4-layer SmolLM2 cut's 42M parameters, whose AdamW update took much "
                                   "of a step's time on this CPU).")
    batch_size: int = Field(16, ge=2, description="Texts per phase-1 batch; pairs per phase-2 batch (at most one "
                            "per seen family).")
    lr: float = Field(2e-4, gt=0, description="Learning rate (AdamW) of both phases.")
    max_length: int = Field(128, ge=8, description="Tokens per text (longer ones are cut).")
    arms: list[DiscoArm] = Field(
        ["student", "teacher", "distilled", "distilled_contrastive", "distilled_contrastive_kd", "contrastive",
         "contrastive_kd"], min_length=1, description="What `distill-ray disco` scores: student (untouched), teacher "
        "(the stand-in), distilled (phase 1), distilled_contrastive / distilled_contrastive_kd (phase 1, then "
        "phase 2 plain / with contrastive KD), contrastive / contrastive_kd (phase 2 only).")

    @model_validator(mode="after")
    def _check(self):
        if len(set(self.arms)) != len(self.arms):
            raise ValueError(f"disco.arms must not repeat an arm: {self.arms}")
        if self.distill_mse == 0 and self.distill_cosine == 0:
            raise ValueError("disco.distill_mse and disco.distill_cosine are both 0: phase 1 would train nothing")
        if self.unseen_families % 2:
            raise ValueError(f"disco.unseen_families must be even (two per topic), got {self.unseen_families}")
        return self


class RunConfig(Section):
    name: str = Field("run", description="Run name (recorded in the report).")
    output_dir: str = Field("outputs/run", description="Where dataset/, student/ and the report go.")
    seed: int = Field(0, description="Seed for problems, exemplars, sampling and training.")
    chunk_size: int = Field(1024, ge=1, description="Problems per dataset shard, the unit of resumption: a killed "
                            "run redoes only the chunks in flight. The sink holds the rows of the chunks in flight, "
                            "so memory grows with it; the actor pools start once per job whatever its value.")
    resume: bool = Field(True, description="Continue an existing dataset at output_dir (same settings required) "
                         "instead of deleting it and starting over.")
    ray: RayConfig = RayConfig()
    mlflow_uri: str | None = Field(None, description="MLflow tracking URI (file:outputs/mlruns, http://host:5000): "
                                   "generate logs its dataset's numbers and training each step's loss and the run's "
                                   "throughput there, when mlflow is installed. Null: MLFLOW_TRACKING_URI if set, "
                                   "else no MLflow (TensorBoard files are always written).")
    task: TaskConfig = TaskConfig()
    prompt: PromptConfig = PromptConfig()
    teacher: TeacherConfig = Field(TeacherConfig(), description="The teacher, or with `teachers` the settings "
                                   "every listed teacher starts from (so --samples, --teacher-model apply to all).")
    teachers: list[TeacherConfig] = Field([], description="Several teachers in one job: each entry overrides "
                                          "fields of `teacher` (give each a unique name); empty: just `teacher`.")
    verify: VerifyConfig = VerifyConfig()
    vote: VoteConfig = VoteConfig()
    critic: CriticConfig = CriticConfig()
    gal: GalConfig = GalConfig()
    mixup: MixupConfig = MixupConfig()
    train: TrainConfig = TrainConfig()
    on_policy: OnPolicyConfig = OnPolicyConfig()
    eval: EvalConfig = EvalConfig()
    experiment: ExperimentConfig = ExperimentConfig()
    decompose: DecomposeConfig = DecomposeConfig()
    disco: DiscoConfig = DiscoConfig()


    @model_validator(mode="before")
    @classmethod
    def _teachers_inherit_teacher(cls, data):
        """Each `teachers` entry starts from the `teacher` section: a one-teacher config stays short, and
        flags that set `teacher.*` reach every teacher that does not override that field."""
        if isinstance(data, dict) and isinstance(data.get("teachers"), list):
            base = data.get("teacher") or {}
            base = base.model_dump() if isinstance(base, BaseModel) else dict(base)
            data = {**data, "teachers": [{**base, **entry} if isinstance(entry, dict) else entry
                                         for entry in data["teachers"]]}
        return data

    @model_validator(mode="after")
    def _no_knife_in_the_pipeline(self):
        phases = [self.train.objectives, *(stage.objectives for stage in self.train.stages)]
        chosen = {name for objectives in phases for name, weight in objectives.items() if weight}
        if chosen & {"knife", "knife_teacher"}:
            raise ValueError("train.objectives knife and knife_teacher read rows with a rationale_text column (and "
                             "knife a teacher trained with knife_teacher), which the pipeline's dataset does not have: "
                             "train them with train_student (python -m distill_ray.train.knife_run shows how)")
        return self

    @model_validator(mode="after")
    def _unique_teacher_names(self):
        names = [t.name for t in self.teachers]
        if len(set(names)) != len(names):
            raise ValueError(f"teachers: names must be unique (they label every row), got {names}")
        return self

    def teacher_list(self) -> list[TeacherConfig]:
        """The teachers of this job: `teachers`, or the single `teacher`."""
        return list(self.teachers) or [self.teacher]


class ConfigError(ValueError):
    """A bad config: the message names each bad field."""


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> RunConfig:
    data = yaml.safe_load(Path(path).read_text()) if path else {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections")
    for item in overrides or []:
        apply_override(data, item)
    return validate(RunConfig, data, path)


def validate(model: type[BaseModel], data: dict, path=None):
    """``data`` as ``model`` (a run's or the puzzle job's settings), or a ConfigError naming each bad field."""
    try:
        return model.model_validate(data)
    except ValidationError as error:
        raise ConfigError(format_errors(error, path)) from None


def apply_override(data: dict, item: str) -> None:
    """``teacher.samples=8`` sets data['teacher']['samples'] = 8 (the value is parsed as YAML)."""
    key, sep, raw = item.partition("=")
    if not sep or not key:
        raise ConfigError(f"override {item!r} must look like section.field=value")
    *parents, leaf = key.strip().split(".")
    node = data
    for part in parents:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override {item!r}: {part!r} is not a section")
    node[leaf] = yaml.safe_load(raw)


def format_errors(error: ValidationError, path) -> str:
    lines = [f"invalid config{f' {path}' if path else ''}:"]
    for e in error.errors():
        field = ".".join(str(p) for p in e["loc"]) or "(top level)"
        lines.append(f"  {field}: {e['msg']}")
    return "\n".join(lines)


def reference(model: type[BaseModel] = RunConfig, prefix: str = "",
              seen: set | None = None) -> list[tuple[str, str, str]]:
    """(field, default, description) for every leaf field: the README's config reference. The fields of a list's
    entries follow the list as ``name[].field``, unless their model is documented already (``teachers``)."""
    seen = {model} if seen is None else seen | {model}
    rows = []
    for name, info in model.model_fields.items():
        key = f"{prefix}{name}"
        annotation = info.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            rows += reference(annotation, key + ".", seen)
            seen.add(annotation)
            continue
        rows.append((key, "required" if info.is_required() else repr(info.default), info.description or ""))
        entry = _list_entry_model(annotation)
        if entry and entry not in seen:
            rows += reference(entry, key + "[].", seen)
    return rows


def _list_entry_model(annotation) -> type[BaseModel] | None:
    """M for ``list[M]`` of a pydantic model M, else None."""
    from typing import get_args, get_origin

    args = get_args(annotation)
    if get_origin(annotation) is list and args and isinstance(args[0], type) and issubclass(args[0], BaseModel):
        return args[0]
    return None
