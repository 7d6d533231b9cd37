"""Training objectives, combinable with weights: ``{"sft": 1.0, "kd": 0.5}`` trains on
``1.0 * sft + 0.5 * kd``. The student's forward pass over the target window is computed once and shared by
every term; ``icl`` and ``mlm`` run their own forward on their own inputs.

- ``sft``: cross-entropy on the completion tokens.
- ``soft``: sequence-level soft labels: each row's likelihood weighted by its ``label_weight``.
- ``kd``: token-level T^2 * KL(teacher || student) at temperature T. One teacher context per row: a row
  with stored teacher top-k (the teacher's few-shot context, ``teacher_topk``) is distilled from those
  alone, and its target tokens without an entry (the appended EOS, a newline extraction added) take the
  hard label (cross-entropy: the teacher's verified output is a one-hot target there); a row without
  them is distilled from a teacher model loaded in the worker, on the student's own (zero-shot) prompt.
- ``swing``: ``kd`` with a per-token temperature that rises with the token's privacy score and Gaussian
  noise on the teacher logits (privacy-aware distillation).
- ``icl``: cross-entropy on the final target of inputs carrying k demonstrations.
- ``mlm``: span infilling (PanGu-Coder's masked LM, decoder-style: ``infill.py``): a span of each target is
  cut out, its place marked, and the model writes it after the sequence; cross-entropy on the span + EOS.
- ``rkd_distance`` / ``rkd_angle``: relational KD: the pairwise distances (angles of triplets) between the
  micro-batch's examples, embedded by the student and by the teacher model (mean-pooled last hidden state over
  prompt + target), matched (``losses.rkd_distance`` / ``rkd_angle``); a batch-level term, counted once per
  target token of the batch so it mixes with the token terms by weight.
- ``knife_teacher`` / ``knife``: KNIFE (``knife.py``), rationale knowledge through a bottleneck. ``knife_teacher``
  trains a teacher on the targets of ``[rationale, input, target]`` rows whose targets may not attend to the
  rationale; ``knife`` matches the student's hidden states of the input and target tokens to that teacher's
  (loaded in the worker), a mean squared error counted once per target token (as the relational terms).

A mixture-of-experts student (``moe.py``) adds ``router_aux``, Switch Transformer's load-balancing loss of its
routers, with weight ``DistillParams.router_aux_weight`` beside whichever terms are trained (it is not an
objective: the model computes it, but only adds it to a loss of its own, which the terms here do not use).

A batch is what ``batch.make_batch`` makes: ``data.collate``'s left-padded ``input_ids``, ``attention_mask``,
``position_ids`` and unshifted ``labels`` (IGNORE_INDEX on prompt and padding), plus the extras named there.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from distill_ray.train import knife, losses
from distill_ray.train.data import IGNORE_INDEX, max_target_len
from distill_ray.train.privacy import likelihood_scores, stored_target_logprobs

OBJECTIVES = ("sft", "soft", "kd", "swing", "icl", "mlm", "rkd_distance", "rkd_angle", "knife_teacher", "knife")
RELATIONAL = ("rkd_distance", "rkd_angle")
TEACHER_MODEL_TERMS = ("kd", "swing", *RELATIONAL, "knife")   # terms that may run a teacher model in the worker
NEEDS = {"soft": {"label_weight"}, "kd": {"topk"}, "swing": {"topk", "privacy"}, "icl": {"icl"}, "mlm": {"mlm"},
         "knife_teacher": {"knife"}, "knife": {"knife"}}
# Terms that run the model on inputs of their own: term -> make_batch's extra holding them.
SIDE_INPUTS = {"icl": "icl", "mlm": "mlm", "knife_teacher": "knife"}
ROUTER_AUX = "router_aux"      # an MoE student's load-balancing loss, in LossOutput.parts


@dataclass
class LossOutput:
    loss: torch.Tensor     # scalar to backpropagate: weighted sum of the terms' token sums / the normaliser
    tokens: int            # target tokens the loss covered
    parts: dict[str, float] = field(default_factory=dict)  # each term's unweighted per-token mean on this batch
    total: float = 0.0     # the weighted sum of the terms' token sums (before normalising)


@dataclass
class DistillParams:
    """The knobs of the teacher-based terms (copied from TrainSettings)."""
    kd_temperature: float = 2.0
    swing_max_temperature: float = 8.0
    swing_noise: float = 1.0
    router_aux_weight: float = 0.0   # an MoE student's load-balancing loss (0: none; needs an MoE student)
    knife_layers: tuple[int, ...] = (-1,)   # knife: the hidden states matched (indexes; -1: the last layer's)


@dataclass
class Forward:
    """Student logits over the target window: ``logits[:, t]`` predicts ``labels[:, t]``; batch tensors laid
    out like ``labels`` are cut to the same window with ``window``."""
    logits: torch.Tensor   # [B, T, V] float32
    labels: torch.Tensor   # [B, T]
    start: int             # first column of the window in the full-width batch
    embedding: torch.Tensor | None = None   # [B, D]: mean-pooled last hidden state, when asked for
    hidden_states: tuple | None = None      # every layer's [B, W, D] (embeddings first), when asked for
    aux_loss: torch.Tensor | None = None    # an MoE student's load-balancing loss over the batch, when asked for

    @property
    def mask(self) -> torch.Tensor:
        return self.labels != IGNORE_INDEX

    def window(self, tensor: torch.Tensor) -> torch.Tensor:
        return tensor[:, self.start:]


def forward(model, batch: dict[str, torch.Tensor], embed: bool = False, router: bool = False,
            hidden: bool = False) -> Forward:
    """With left padding every target ends at the last position, so only the last ``T + 1`` positions need
    the vocabulary projection (``logits_to_keep``); logit ``i`` predicts token ``i + 1``. ``embed``: also each
    row's mean-pooled last hidden state; ``router``: also an MoE student's load-balancing loss (over every real
    token of the batch, prompt included: the routers see them all); ``hidden``: also every layer's hidden states.
    A KNIFE teacher batch (``knife.teacher_batch``) runs with its bottleneck mask."""
    width = batch["input_ids"].shape[1]
    keep = min(max_target_len(batch) + 1, width)
    extra = {"output_router_logits": True} if router else {}   # a dense model must not receive the flag
    out = model(input_ids=batch["input_ids"], attention_mask=knife.attention(model, batch),
                position_ids=batch["position_ids"], use_cache=False, logits_to_keep=keep,
                output_hidden_states=embed or hidden, **extra)
    if router and getattr(out, "aux_loss", None) is None:
        raise ValueError("the router_aux term needs a mixture-of-experts student (train.moe)")
    start = width - keep + 1
    embedding = mean_pool(out.hidden_states[-1], batch["attention_mask"]) if embed else None
    return Forward(logits=out.logits[:, :-1].float(), labels=batch["labels"][:, start:], start=start,
                   embedding=embedding, aux_loss=out.aux_loss if router else None,
                   hidden_states=out.hidden_states if hidden else None)


def mean_pool(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """[B, W, D] -> [B, D]: the mean over each row's real (non-padding) tokens."""
    mask = attention_mask.to(hidden.dtype)[..., None]
    return (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)


def target_logits(model, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits that predict each target token, and those tokens: ``(logits [B, T, V], labels [B, T])``."""
    fwd = forward(model, batch)
    return fwd.logits, fwd.labels


def sft_loss(model, batch: dict[str, torch.Tensor]) -> LossOutput:
    """Cross-entropy on the completion tokens only (prompt and padding labels are IGNORE_INDEX)."""
    fwd = forward(model, batch)
    tokens = int(fwd.mask.sum())
    return LossOutput(loss=_lm(fwd), tokens=tokens)


def _lm(fwd: Forward) -> torch.Tensor:
    return _lm_sum(fwd) / max(int(fwd.mask.sum()), 1)


def _lm_sum(fwd: Forward) -> torch.Tensor:
    """Summed cross-entropy over the target tokens (0, with the graph kept, when there are none: every rank
    must still run backward)."""
    return losses.token_nll(fwd.logits, fwd.labels).sum()


class Objective:
    """``weights`` over OBJECTIVES; ``teacher`` a causal LM with the student's tokenizer (kd/swing rows
    without stored top-k). Call with ``(model, batch, generator)``; the generator seeds swing's noise."""

    def __init__(self, weights: dict[str, float], params: DistillParams | None = None, teacher=None):
        unknown = set(weights) - set(OBJECTIVES)
        if unknown or not weights:
            raise ValueError(f"unknown or no objective(s) {sorted(unknown)}; known: {list(OBJECTIVES)}")
        self.weights = {name: float(w) for name, w in weights.items() if w}
        self.params = params or DistillParams()
        self.teacher = teacher

    @property
    def needs(self) -> set[str]:
        """Extras ``make_batch`` must build for these terms."""
        return set().union(*(NEEDS.get(name, set()) for name in self.weights))

    def __call__(self, model, batch: dict, generator: torch.Generator | None = None,
                 normaliser: float | None = None) -> LossOutput:
        """Every term is a sum over target tokens; the loss divides the weighted sum by ``normaliser`` (the
        training loop passes the target tokens of the whole global batch, so each token weighs the same
        whatever micro-batch or worker it is in), by default this batch's own target tokens."""
        router = self.params.router_aux_weight > 0
        embed = bool(set(RELATIONAL) & set(self.weights))
        fwd = None if fwd_free(self.weights) else forward(model, batch, embed=embed, router=router,
                                                          hidden="knife" in self.weights)
        sums = {name: self._term(name, model, fwd, batch, generator) for name in self.weights}
        total = sum(self.weights[name] * value for name, value in sums.items())
        tokens = self.tokens(batch)
        if router:
            sums[ROUTER_AUX] = self._router_aux(model, fwd, batch, tokens)
            total = total + self.params.router_aux_weight * sums[ROUTER_AUX]
        return LossOutput(loss=total / (normaliser or max(tokens, 1)), tokens=tokens,
                          parts={k: float(v.detach()) / max(tokens, 1) for k, v in sums.items()},
                          total=float(total.detach()))

    def tokens(self, batch: dict) -> int:
        return target_tokens(batch, own=_own_inputs(self.weights))

    def _router_aux(self, model, fwd: Forward | None, batch: dict, tokens: int) -> torch.Tensor:
        """The load-balancing loss counted once per target token (as the relational terms), so its weight reads
        per token whatever the batch. From the shared forward; terms that all run on inputs of their own (icl,
        mlm) have none, and pay one more forward for it."""
        fwd = fwd or forward(model, batch, router=True)
        return fwd.aux_loss * tokens

    def _term(self, name: str, model, fwd: Forward | None, batch: dict, generator) -> torch.Tensor:
        if name == "sft":
            return _lm_sum(fwd)
        if name == "soft":
            return losses.soft_label_sum(losses.token_nll(fwd.logits, fwd.labels), batch["label_weight"])
        if name in SIDE_INPUTS:
            return _lm_sum(forward(model, batch[SIDE_INPUTS[name]]))
        if name in RELATIONAL:
            relational = losses.rkd_distance if name == "rkd_distance" else losses.rkd_angle
            return relational(fwd.embedding, self._teacher_embedding(batch)) * int(fwd.mask.sum())
        if name == "knife":
            if self.teacher is None:
                raise ValueError("knife needs a KNIFE teacher model (teacher_dir): one trained with knife_teacher")
            return knife.alignment(fwd.hidden_states, knife.teacher_states(self.teacher, batch["knife"]),
                                   batch["attention_mask"], self.params.knife_layers) * int(fwd.mask.sum())
        p = self.params
        if name == "kd":
            return self._distill(fwd, batch, torch.full(fwd.labels.shape, p.kd_temperature), 0.0, None)
        if "privacy" in batch:
            privacy = fwd.window(batch["privacy"])
        else:  # the likelihood scorer (make_batch left it out): scored from the teacher's view of the targets
            privacy = likelihood_scores(self._target_logprobs(batch, fwd), fwd.mask)
        temperature = losses.swing_temperatures(privacy, p.kd_temperature, p.swing_max_temperature)
        return self._distill(fwd, batch, temperature, p.swing_noise, generator)

    @torch.no_grad()
    def _target_logprobs(self, batch: dict, fwd: Forward) -> torch.Tensor:
        """The teacher's log-probability of each target token [B, T]: stored top-k in rows that have it (NaN,
        unscored, on their tokens without an entry), else the teacher model (``_teacher_logits``, a no-grad pass
        only the likelihood scorer pays)."""
        mask = fwd.mask
        labels = fwd.labels.clamp(min=0)
        stored = fwd.window(batch["topk_mask"]) & mask if "topk_mask" in batch else torch.zeros_like(mask)
        logprobs = torch.full(labels.shape, float("nan"), device=fwd.logits.device)
        if stored.any():
            logprobs[stored] = stored_target_logprobs(fwd.window(batch["topk_ids"])[stored],
                                                      fwd.window(batch["topk_logprobs"])[stored], labels[stored])
        rows = mask.any(dim=1) & ~stored.any(dim=1)
        if rows.any():
            if self.teacher is None:
                raise ValueError("swing's likelihood scorer needs stored teacher_topk or a teacher model")
            teacher = torch.log_softmax(self._teacher_logits(batch, fwd, rows), dim=-1).gather(-1, labels[rows][..., None])
            logprobs[rows] = torch.where(mask[rows], teacher.squeeze(-1), logprobs[rows])
        return logprobs

    def _distill(self, fwd: Forward, batch: dict, temperature: torch.Tensor, noise: float, generator) -> torch.Tensor:
        """Summed per-token loss over target tokens, one teacher context per row (see the module docstring)."""
        mask = fwd.mask
        has_topk = batch["topk_row"].to(mask.device)[:, None] & mask if "topk_row" in batch else torch.zeros_like(mask)
        stored = fwd.window(batch["topk_mask"]) & has_topk if "topk_mask" in batch else torch.zeros_like(mask)
        hard = has_topk & ~stored
        rest = mask & ~has_topk
        temperature = temperature.to(fwd.logits.device)
        # Noise of std ``noise`` on the *tempered* logits (std noise * T on the raw ones): the hotter a
        # private token's temperature, the less of the teacher's signal survives the noise.
        total = fwd.logits.sum() * 0.0
        if stored.any():
            logprobs = losses.add_noise(fwd.window(batch["topk_logprobs"])[stored], _scale(noise, temperature, stored),
                                        generator)
            total = total + losses.kl_topk(fwd.logits[stored], fwd.window(batch["topk_ids"])[stored], logprobs,
                                           temperature[stored]).sum()
        if hard.any():
            total = total + losses.token_nll(fwd.logits, fwd.labels)[hard].sum()
        if rest.any():
            if self.teacher is None:
                raise ValueError("kd/swing rows without a teacher_topk column need a teacher model (teacher_dir)")
            rows = rest.any(dim=1)
            teacher_logits = losses.add_noise(self._teacher_logits(batch, fwd, rows)[rest[rows]],
                                              _scale(noise, temperature, rest), generator)
            total = total + losses.kl_full(fwd.logits[rest], teacher_logits, temperature[rest]).sum()
        return total

    @torch.no_grad()
    def _teacher_embedding(self, batch: dict) -> torch.Tensor:
        """The teacher model's embedding of each row (as the student's: mean-pooled last hidden state)."""
        if self.teacher is None:
            raise ValueError("rkd_distance/rkd_angle need a teacher model (teacher_dir) with the student's tokenizer")
        out = self.teacher(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                           position_ids=batch["position_ids"], use_cache=False, logits_to_keep=1,
                           output_hidden_states=True)
        return mean_pool(out.hidden_states[-1].float(), batch["attention_mask"])

    @torch.no_grad()
    def _teacher_logits(self, batch: dict, fwd: Forward, rows: torch.Tensor) -> torch.Tensor:
        """The loaded teacher's logits over the target window, run only on the ``rows`` that need it."""
        keep = fwd.logits.shape[1] + 1
        out = self.teacher(input_ids=batch["input_ids"][rows], attention_mask=batch["attention_mask"][rows],
                           position_ids=batch["position_ids"][rows], use_cache=False, logits_to_keep=keep)
        return out.logits[:, :-1].float()


def target_tokens(batch: dict, own: str | None = None) -> int:
    """Target tokens of a batch (what the loss is normalised by): its labels', or, when the terms all run on
    inputs of their own, those of ``own`` (icl's: the same targets, unless demonstrations cut some off;
    mlm's: the spans + EOS, so an ``mlm``-only loss is the NLL per span token)."""
    labels = batch[own]["labels"] if own else batch["labels"]
    return int((labels != IGNORE_INDEX).sum())


def fwd_free(weights: dict) -> bool:
    """True when no term needs the forward pass over the plain batch (icl, mlm and knife_teacher run their own)."""
    return not set(weights) - set(SIDE_INPUTS)


def _own_inputs(weights: dict) -> str | None:
    """The side input whose targets normalise the loss when no term reads the plain batch (icl first, when
    both: its targets are the plain ones); None otherwise."""
    return next((SIDE_INPUTS[name] for name in SIDE_INPUTS if name in weights), None) if fwd_free(weights) else None


def _scale(noise: float, temperature: torch.Tensor, where: torch.Tensor) -> torch.Tensor | float:
    return noise * temperature[where] if noise > 0 else 0.0
