"""The two phases of ``distill-ray disco`` on a pooled-embedding model, a plain torch loop in one process.

``Embedder``: a transformer body (the causal LM without its vocabulary head), mean-pooled over a text's real
tokens (``objectives.mean_pool``: what relational KD embeds with), then a linear head (identity at start when the
widths match, so an untouched student embeds as its body does). Phase 1 (``distill``) matches the head's output
to the teacher's pooled state of the same unlabelled text; phase 2 (``contrastive``) trains on pairs of one
family with in-batch negatives, plain (InfoNCE) or with the teacher's in-batch similarities as soft targets.
"""

from __future__ import annotations

import json
import random
import time
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from distill_ray.embed import losses
from distill_ray.embed.data import pair_batches


HEAD_FILE = "embedding_head.safetensors"
EMBEDDER_FILE = "embedder.json"


class Embedder(torch.nn.Module):
    def __init__(self, model_dir: str, out_width: int | None = None, layer: int = -1, seed: int = 0):
        from transformers import AutoModel, AutoTokenizer

        super().__init__()
        self.tokenizer = AutoTokenizer.from_pretrained(model_dir)
        self.body = AutoModel.from_pretrained(model_dir, dtype=torch.float32)
        self.layer = layer
        width = self.body.config.hidden_size
        out_width = out_width or width
        self.head = torch.nn.Linear(width, out_width, bias=False)
        with torch.no_grad():
            if out_width == width:
                self.head.weight.copy_(torch.eye(width))
            else:
                self.head.weight.copy_(torch.randn(out_width, width, generator=torch.Generator().manual_seed(seed))
                                       / width ** 0.5)

    def forward(self, texts: list[str], max_length: int) -> torch.Tensor:
        from distill_ray.train.objectives import mean_pool

        batch = self.tokenizer(texts, padding=True, truncation=True, max_length=max_length, return_tensors="pt")
        out = self.body(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], use_cache=False,
                        output_hidden_states=self.layer != -1)
        hidden = out.last_hidden_state if self.layer == -1 else out.hidden_states[self.layer]
        return self.head(mean_pool(hidden, batch["attention_mask"]))

    def save(self, directory: Path) -> Path:
        """The body as a Hugging Face folder (``AutoModel`` reloads it), with the tokenizer, the head's weights and
        the pooled layer: what ``Embedder.load`` reads back."""
        directory = Path(directory)
        self.body.save_pretrained(directory)
        self.tokenizer.save_pretrained(directory)
        save_file({"weight": self.head.weight.detach().contiguous()}, directory / HEAD_FILE)
        (directory / EMBEDDER_FILE).write_text(json.dumps({"layer": self.layer, "width": self.head.out_features,
                                                           "pooling": "mean"}))
        return directory

    @classmethod
    def load(cls, directory: Path) -> Embedder:
        directory = Path(directory)
        settings = json.loads((directory / EMBEDDER_FILE).read_text())
        embedder = cls(str(directory), out_width=settings["width"], layer=settings["layer"])
        with torch.no_grad():
            embedder.head.weight.copy_(load_file(directory / HEAD_FILE)["weight"])
        return embedder

    @torch.no_grad()
    def encode(self, texts: list[str], max_length: int, batch_size: int = 32) -> torch.Tensor:
        """[N, D] embeddings of ``texts``, encoded shortest first (little padding), returned in ``texts``' order."""
        was_training = self.training
        self.eval()
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        out = torch.empty(len(texts), self.head.out_features)
        for start in range(0, len(order), batch_size):
            chunk = order[start:start + batch_size]
            out[chunk] = self([texts[i] for i in chunk], max_length)
        self.train(was_training)
        return out


def spearman_of(embedder: Embedder, pairs: list[tuple[str, str, int]], max_length: int) -> float:
    """Spearman's rho between the cosine similarity of each pair's embeddings and its label."""
    texts = sorted({t for a, b, _ in pairs for t in (a, b)})
    return pair_spearman(dict(zip(texts, embedder.encode(texts, max_length))), pairs)


def pair_spearman(vectors: dict[str, torch.Tensor], pairs: list[tuple[str, str, int]]) -> float:
    """``spearman_of`` from embeddings already computed (text -> vector)."""
    return losses.spearman(pair_cosines(vectors, pairs), [value for _, _, value in pairs])


def pair_cosines(vectors: dict[str, torch.Tensor], pairs: list[tuple[str, str, int]]) -> torch.Tensor:
    a, b = (torch.stack([vectors[pair[side]] for pair in pairs]) for side in (0, 1))
    return torch.nn.functional.cosine_similarity(a, b, dim=-1)


def train_head(vectors: dict[str, torch.Tensor], train: dict[str, list[str]], steps: int, batch_size: int,
               lr: float, temperature: float, seed: int) -> torch.nn.Linear:
    """The teacher stand-in's head: a linear map (identity at start) of frozen embeddings trained ``steps``
    InfoNCE steps on phase 2's kind of pair batches; identity when ``steps`` is 0."""
    width = len(next(iter(vectors.values())))
    head = torch.nn.Linear(width, width, bias=False)
    with torch.no_grad():
        head.weight.copy_(torch.eye(width))

    def loss(pairs: list[tuple[str, str]]) -> torch.Tensor:
        anchors, positives = (head(torch.stack([vectors[pair[side]] for pair in pairs])) for side in (0, 1))
        return losses.info_nce(anchors, positives, temperature)

    if steps:
        _optimize(head, (lambda b=b: b for b in pair_batches(train, batch_size, steps, seed)), loss, lr, seed)
    return head.requires_grad_(False)


def distill(student: Embedder, texts: list[str], teacher: dict[str, torch.Tensor], steps: int, batch_size: int,
            lr: float, mse: float, cosine: float, max_length: int, seed: int) -> list[float]:
    """Phase 1: ``steps`` AdamW steps of ``mse * distill_mse + cosine * distill_cosine`` against the teacher's
    embeddings of ``texts`` (``teacher``: text -> vector), batches drawn in a seeded order, epoch after epoch."""
    rng = random.Random(f"disco-distill-{seed}")
    order: list[str] = []

    def batch() -> list[str]:
        nonlocal order
        if len(order) < batch_size:
            order = order + rng.sample(texts, len(texts))
        taken, order = order[:batch_size], order[batch_size:]
        return taken

    def loss(chunk: list[str]) -> torch.Tensor:
        out = student(chunk, max_length)
        target = torch.stack([teacher[t] for t in chunk])
        return mse * losses.distill_mse(out, target) + cosine * losses.distill_cosine(out, target)

    return _optimize(student, (batch for _ in range(steps)), loss, lr, seed)


def contrastive(student: Embedder, train: dict[str, list[str]], teacher: dict[str, torch.Tensor] | None,
                steps: int, batch_size: int, lr: float, temperature: float, teacher_temperature: float,
                kd_weight: float, max_length: int, seed: int) -> list[float]:
    """Phase 2: ``steps`` AdamW steps of ``losses.contrastive`` on pair batches (``data.pair_batches``); the
    teacher's embeddings are needed when ``kd_weight`` > 0."""
    batches = pair_batches(train, batch_size, steps, seed)

    def loss(pairs: list[tuple[str, str]]) -> torch.Tensor:
        anchors, positives = (list(side) for side in zip(*pairs))
        out = student(anchors + positives, max_length)
        t_anchors = t_positives = None
        if kd_weight > 0:
            t_anchors = torch.stack([teacher[t] for t in anchors])
            t_positives = torch.stack([teacher[t] for t in positives])
        return losses.contrastive(out[:len(pairs)], out[len(pairs):], t_anchors, t_positives, temperature,
                                  teacher_temperature, kd_weight)

    return _optimize(student, (lambda b=b: b for b in batches), loss, lr, seed)


def _optimize(model: torch.nn.Module, batches, loss_of, lr: float, seed: int) -> list[float]:
    """One AdamW step per batch (each a callable returning its inputs); the loss history."""
    torch.manual_seed(seed)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr, weight_decay=0.0)
    model.train()
    history = []
    for make in batches:
        optimizer.zero_grad(set_to_none=True)
        loss = loss_of(make())
        loss.backward()
        torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], 1.0)
        optimizer.step()
        history.append(round(loss.item(), 5))
    model.eval()
    return history


def teacher_vectors(teacher: Embedder, texts: list[str], max_length: int) -> dict[str, torch.Tensor]:
    """The teacher's embedding of every text, once (the teacher never trains)."""
    started = time.perf_counter()
    unique = sorted(set(texts))
    vectors = dict(zip(unique, teacher.encode(unique, max_length)))
    print(f"disco: teacher embedded {len(unique)} texts in {time.perf_counter() - started:.0f}s", flush=True)
    return vectors
