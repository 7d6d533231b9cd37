"""EPR (Rubin et al., 2022): few-shot exemplars chosen by a retriever that the teacher itself taught.

1. **Score.** For each training problem (one with a known reference program) and each of its candidate
   exemplars (the top of the ``retrieved`` ranking, same family then BM25, plus random ones from the pool),
   the teacher's log-likelihood of the problem's reference completion after a 1-shot prompt with that
   exemplar, rendered exactly as the teacher stage renders it (``build_messages`` + ``render`` + the response
   prefix): ``score_candidates``.
2. **Label.** Per problem, the best-scored candidates are its positives, the worst-scored its negatives.
3. **Train.** Two small encoders (query: the problem's text; exemplar: its question and answer) of hashed
   word, word-bigram and character-trigram features, each a linear map to a unit-norm embedding, trained
   with a contrastive loss over the batch's positives and hard negatives (in-batch negatives that are also a
   positive of the query are masked out): ``train_retriever``.
4. **Retrieve.** ``Retriever.top_k``: the pool's exemplars by dot product with the query's embedding, the
   query itself excluded (``prompt.exemplars: learned``, ``prompt.retriever: DIR``).

A retriever is saved as ``retriever.npz`` (the two weight matrices) and ``retriever.json`` (its settings, the
npz's sha256 digest, the training report); ``Retriever.load`` refuses a directory whose npz does not match.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from distill_ray.prompts import Exemplar, build_messages, choose_exemplars, render, render_plain_prompt, response_prefix

FORMAT = "distill-ray-epr-retriever/1"


# --- features ---------------------------------------------------------------------------------------------

def _feature_tokens(text: str) -> list[str]:
    return re.findall(r"[A-Za-z_]\w*|\d+|[^\sA-Za-z_\d]+", text)


def hashed_features(text: str, buckets: int) -> tuple[np.ndarray, np.ndarray]:
    """(bucket ids, weights) of a text: words, word bigrams and character trigrams (of the whitespace-collapsed
    text), hashed with crc32 (stable across processes), log-scaled counts, each kind L2-normalised."""
    words = _feature_tokens(text)
    flat = " ".join(text.split())
    kinds = [["w:" + w for w in words], ["b:" + a + " " + b for a, b in zip(words, words[1:])],
             ["c:" + flat[i:i + 3] for i in range(max(len(flat) - 2, 0))]]
    ids, weights = [], []
    for feats in kinds:
        counts: dict[int, int] = {}
        for f in feats:
            h = zlib.crc32(f.encode()) % buckets
            counts[h] = counts.get(h, 0) + 1
        if not counts:
            continue
        w = np.log1p(np.array(list(counts.values()), dtype=np.float32))
        ids += list(counts)
        weights += list(w / np.linalg.norm(w))
    if not ids:
        return np.zeros(1, dtype=np.int64), np.zeros(1, dtype=np.float32)
    return np.array(ids, dtype=np.int64), np.array(weights, dtype=np.float32)


def exemplar_text(shot: Exemplar) -> str:
    return shot.question + "\n" + shot.answer


# --- the retriever ------------------------------------------------------------------------------------------

@dataclass
class Retriever:
    """Query and exemplar encoders (``buckets x dim`` each); an embedding is the weighted sum of its features'
    rows, L2-normalised, so a dot product is a cosine."""
    query_weights: np.ndarray
    exemplar_weights: np.ndarray
    meta: dict = field(default_factory=dict)
    _pool_cache: dict = field(default_factory=dict, repr=False, compare=False)

    @property
    def buckets(self) -> int:
        return self.query_weights.shape[0]

    def _embed(self, weights: np.ndarray, texts: list[str]) -> np.ndarray:
        out = np.zeros((len(texts), weights.shape[1]), dtype=np.float32)
        for i, text in enumerate(texts):
            ids, w = hashed_features(text, self.buckets)
            out[i] = w @ weights[ids]
        return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-8)

    def embed_queries(self, texts: list[str]) -> np.ndarray:
        return self._embed(self.query_weights, texts)

    def embed_exemplars(self, shots: list[Exemplar]) -> np.ndarray:
        return self._embed(self.exemplar_weights, [exemplar_text(s) for s in shots])

    def scores(self, pool: list[Exemplar], question: str) -> np.ndarray:
        key = tuple(pool)
        if key not in self._pool_cache:   # the pool is embedded once, not once per prompt
            self._pool_cache.clear()
            self._pool_cache[key] = self.embed_exemplars(list(pool))
        return self._pool_cache[key] @ self.embed_queries([question])[0]

    def top_k(self, pool: list[Exemplar], question: str, k: int) -> list[Exemplar]:
        """The k exemplars of the pool with the highest dot product (ties: pool order), never the question."""
        scores = self.scores(pool, question)
        ranked = sorted(range(len(pool)), key=lambda i: (-scores[i], i))
        return [pool[i] for i in ranked if pool[i].question != question][:k]

    @property
    def digest(self) -> str:
        return self.meta.get("digest", "")

    def save(self, out_dir: str | Path, report: dict | None = None) -> Path:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        npz = out / "retriever.npz"
        np.savez(npz, query_weights=self.query_weights, exemplar_weights=self.exemplar_weights)
        digest = hashlib.sha256(npz.read_bytes()).hexdigest()
        self.meta = {**self.meta, "format": FORMAT, "buckets": self.buckets, "dim": int(self.query_weights.shape[1]),
                     "digest": digest}
        (out / "retriever.json").write_text(json.dumps({**self.meta, "report": report or {}}, indent=2) + "\n")
        return out

    @classmethod
    def load(cls, path: str | Path) -> "Retriever":
        path = Path(path)
        meta_path, npz = path / "retriever.json", path / "retriever.npz"
        if not meta_path.exists() or not npz.exists():
            raise FileNotFoundError(f"prompt.retriever {str(path)!r} holds no retriever.json + retriever.npz "
                                    "(train one with `distill-ray retriever --out DIR`)")
        meta = json.loads(meta_path.read_text())
        meta.pop("report", None)
        digest = hashlib.sha256(npz.read_bytes()).hexdigest()
        if meta.get("format") != FORMAT or meta.get("digest") != digest:
            raise ValueError(f"retriever {str(path)!r}: retriever.npz does not match retriever.json "
                             f"(digest {digest[:12]} vs {str(meta.get('digest'))[:12]}) or format {meta.get('format')!r}")
        with np.load(npz) as arrays:
            return cls(arrays["query_weights"], arrays["exemplar_weights"], meta)


def load_retriever(path: str | Path) -> Retriever:
    return _load_cached(str(Path(path).resolve()))


_LOADED: dict[str, Retriever] = {}


def _load_cached(path: str) -> Retriever:
    if path not in _LOADED:
        _LOADED[path] = Retriever.load(path)
    return _LOADED[path]


# --- scoring with the teacher -------------------------------------------------------------------------------

def candidate_sets(queries: list[dict], pool: list[Exemplar], num_candidates: int, seed: int) -> list[list[int]]:
    """Pool indices to score for each query: the top half of the ``retrieved`` ranking (same family, then
    BM25), the rest drawn at random from the remainder (seeded by the query); never the query itself."""
    index = {shot: i for i, shot in enumerate(pool)}
    out = []
    for q in queries:
        near = choose_exemplars(pool, (num_candidates + 1) // 2, "retrieved", seed, q["question"], q.get("family", ""))
        chosen = [index[s] for s in near]
        rest = [i for i, s in enumerate(pool) if i not in chosen and s.question != q["question"]]
        chosen += random.Random(f"{seed}:epr:{q['question']}").sample(rest, min(num_candidates - len(chosen), len(rest)))
        out.append(chosen)
    return out


def completion_of(problem: dict) -> tuple[str, str]:
    """(response prefix, reference completion after it): what the teacher is scored on writing."""
    prefix = response_prefix(problem["kind"], problem["question"])
    ref = problem["reference"]
    return prefix, ref[len(prefix):] if ref.startswith(prefix) else ref


def prompt_text(tokenizer, problem: dict, shots: list[Exemplar], prompt_style: str = "chat") -> str:
    """The teacher's prompt for ``problem`` with these exemplars, exactly as the teacher stage renders it."""
    prefix, _ = completion_of(problem)
    messages = build_messages(problem["kind"], problem["question"], shots)
    if prompt_style == "plain":
        return render_plain_prompt(tokenizer, messages, prefix)
    return render(tokenizer, messages, prefix)


def sequence_logprobs(model, tokenizer, pairs: list[tuple[str, str]], batch_size: int = 8) -> list[float]:
    """Sum of log p(completion tokens | prompt) for each (prompt, completion): prompt and completion tokenized
    apart without special tokens (as the engines tokenize a rendered prompt, then generate after it), batched
    left-padded, logits only over the completion positions."""
    import torch

    out: list[float] = []
    for start in range(0, len(pairs), batch_size):
        chunk = pairs[start:start + batch_size]
        rows, lengths = [], []
        for prompt, completion in chunk:
            p = tokenizer(prompt, add_special_tokens=False)["input_ids"]
            c = tokenizer(completion, add_special_tokens=False)["input_ids"]
            if not c:
                raise ValueError(f"empty completion to score after prompt ...{prompt[-40:]!r}")
            rows.append(p + c)
            lengths.append(len(c))
        width, m = max(map(len, rows)), max(lengths)
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        ids = torch.tensor([[pad] * (width - len(r)) + r for r in rows])
        mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows])
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        with torch.no_grad():
            logits = model(input_ids=ids, attention_mask=mask, position_ids=positions, logits_to_keep=m + 1).logits
        logp = torch.log_softmax(logits[:, :-1].float(), dim=-1)        # predicts the last m tokens
        token_lp = logp.gather(-1, ids[:, -m:].unsqueeze(-1)).squeeze(-1)
        keep = torch.arange(m).unsqueeze(0) >= (m - torch.tensor(lengths)).unsqueeze(1)
        out += (token_lp * keep).sum(-1).tolist()
    return out


def score_candidates(model, tokenizer, queries: list[dict], pool: list[Exemplar], candidates: list[list[int]],
                     prompt_style: str = "chat", batch_size: int = 8, log=None) -> list[list[float]]:
    """For each query and each of its candidates: the teacher's log-likelihood of the query's reference
    completion after the 1-shot prompt with that candidate."""
    pairs = [(prompt_text(tokenizer, q, [pool[i]], prompt_style), completion_of(q)[1])
             for q, cands in zip(queries, candidates) for i in cands]
    flat: list[float] = []
    step = max(batch_size * 16, 1)
    for start in range(0, len(pairs), step):
        flat += sequence_logprobs(model, tokenizer, pairs[start:start + step], batch_size)
        if log:
            log(f"epr: scored {len(flat)}/{len(pairs)} (problem, exemplar) pairs")
    out, at = [], 0
    for cands in candidates:
        out.append(flat[at:at + len(cands)])
        at += len(cands)
    return out


def label(candidates: list[list[int]], scores: list[list[float]], positives: int, negatives: int
          ) -> tuple[list[list[int]], list[list[int]]]:
    """Per query: its ``positives`` best-scored candidates and its ``negatives`` worst-scored ones (pool indices)."""
    pos, neg = [], []
    for cands, s in zip(candidates, scores):
        order = [cands[i] for i in sorted(range(len(cands)), key=lambda i: -s[i])]
        pos.append(order[:positives])
        neg.append(order[len(order) - min(negatives, max(len(order) - positives, 0)):] if negatives else [])
    return pos, neg


# --- training -----------------------------------------------------------------------------------------------

def contrastive_loss(q, pos, neg, false_negative, temperature: float):
    """Cross-entropy of each query's positive among the batch's positives and hard negatives (``q``: B x d,
    ``pos``/``neg``: B x d, unit-norm). ``false_negative``: B x 2B bool, True where a column is a positive of
    the row's query other than its own target (masked out of the softmax)."""
    import torch

    logits = q @ torch.cat([pos, neg]).T / temperature
    logits = logits.masked_fill(false_negative, float("-inf"))
    return torch.nn.functional.cross_entropy(logits, torch.arange(len(q)))


def train_retriever(queries: list[str], pool: list[Exemplar], positives: list[list[int]],
                    negatives: list[list[int]], *, buckets: int = 2 ** 13, dim: int = 64, epochs: int = 40,
                    batch_size: int = 16, lr: float = 0.05, temperature: float = 0.1, seed: int = 0
                    ) -> tuple[Retriever, list[float]]:
    """Train both encoders; returns the retriever and the mean loss of each epoch. Both start from the same
    random projection, so before training the retriever ranks by hashed-feature overlap (a lexical prior)."""
    import torch

    torch.manual_seed(seed)
    rng = random.Random(seed)
    init = torch.randn(buckets, dim) / dim ** 0.5
    enc_q = torch.nn.EmbeddingBag(buckets, dim, mode="sum", _weight=init.clone())
    enc_e = torch.nn.EmbeddingBag(buckets, dim, mode="sum", _weight=init.clone())
    opt = torch.optim.Adam(list(enc_q.parameters()) + list(enc_e.parameters()), lr=lr)

    def features(texts):
        ids, weights, offsets = [], [], []
        for t in texts:
            i, w = hashed_features(t, buckets)
            offsets.append(sum(len(x) for x in ids))
            ids.append(i)
            weights.append(w)
        return (torch.from_numpy(np.concatenate(ids)), torch.tensor(offsets),
                torch.from_numpy(np.concatenate(weights)))

    def encode(enc, feats):
        ids, offsets, weights = feats
        return torch.nn.functional.normalize(enc(ids, offsets, per_sample_weights=weights), dim=-1)

    q_feats = [hashed_features(t, buckets) for t in queries]
    e_texts = [exemplar_text(s) for s in pool]
    usable = [i for i in range(len(queries)) if positives[i]]
    history = []
    for _ in range(epochs):
        rng.shuffle(usable)
        losses = []
        for start in range(0, len(usable), batch_size):
            batch = usable[start:start + batch_size]
            pos = [rng.choice(positives[i]) for i in batch]
            neg = [rng.choice(negatives[i]) if negatives[i] else rng.randrange(len(pool)) for i in batch]
            columns = pos + neg
            false_neg = torch.tensor([[j != r and (c in positives[i] or c == pos[r]) for j, c in enumerate(columns)]
                                      for r, i in enumerate(batch)])
            qf = (torch.from_numpy(np.concatenate([q_feats[i][0] for i in batch])),
                  torch.tensor(np.cumsum([0] + [len(q_feats[i][0]) for i in batch[:-1]])),
                  torch.from_numpy(np.concatenate([q_feats[i][1] for i in batch])))
            ef = features([e_texts[c] for c in columns])
            e = encode(enc_e, ef)
            loss = contrastive_loss(encode(enc_q, qf), e[:len(batch)], e[len(batch):], false_neg, temperature)
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
        history.append(float(np.mean(losses)) if losses else 0.0)
    retriever = Retriever(enc_q.weight.detach().numpy().copy(), enc_e.weight.detach().numpy().copy(),
                          {"temperature": temperature, "epochs": epochs, "lr": lr, "seed": seed})
    return retriever, history


# --- the whole recipe: score, label, train, report -------------------------------------------------------------

def top1_hit(ranking: list[int], positives: list[int]) -> bool:
    return bool(ranking) and ranking[0] in positives


def build_retriever(model, tokenizer, queries: list[dict], pool: list[Exemplar], *, num_candidates: int = 12,
                    positives: int = 2, negatives: int = 3, held_out: float = 0.25, prompt_style: str = "chat",
                    seed: int = 0, batch_size: int = 8, epochs: int = 40, log=None) -> tuple[Retriever, dict]:
    """Score every query's candidates with the teacher, train on the first ``1 - held_out`` of the queries, and
    report on the rest: how often each ranker's top-1 among a query's scored candidates is one of the LM's
    positives (retriever, BM25 alone, same family + BM25 (``retrieved``), and random: positives/candidates)."""
    import time

    started = time.perf_counter()
    candidates = candidate_sets(queries, pool, num_candidates, seed)
    scores = score_candidates(model, tokenizer, queries, pool, candidates, prompt_style, batch_size, log)
    scored_s = time.perf_counter() - started
    pos, neg = label(candidates, scores, positives, negatives)
    n_test = int(round(len(queries) * held_out)) if len(queries) > 1 else 0
    train_ids = list(range(len(queries) - n_test))
    test_ids = list(range(len(queries) - n_test, len(queries)))
    retriever, history = train_retriever([queries[i]["question"] for i in train_ids], pool,
                                         [pos[i] for i in train_ids], [neg[i] for i in train_ids],
                                         epochs=epochs, seed=seed)
    from distill_ray.prompts import _bm25

    bm25 = _bm25(tuple(pool))
    hits = {"retriever": 0, "bm25": 0, "retrieved": 0}
    spread = []
    for i in test_ids:
        q, cands = queries[i], candidates[i]
        r = retriever.scores(pool, q["question"])
        b = bm25.scores(q["question"])
        hits["retriever"] += top1_hit(sorted(cands, key=lambda c: -r[c]), pos[i])
        hits["bm25"] += top1_hit(sorted(cands, key=lambda c: -b[c]), pos[i])
        family_first = [pool.index(s) for s in choose_exemplars([pool[c] for c in cands], len(cands), "retrieved",
                                                                 seed, q["question"], q.get("family", ""))]
        hits["retrieved"] += top1_hit(family_first, pos[i])
        spread.append(max(scores[i]) - min(scores[i]))
    n = max(len(test_ids), 1)
    report = {
        "queries": len(queries), "train_queries": len(train_ids), "held_out_queries": len(test_ids),
        "pool": len(pool), "candidates_per_query": num_candidates, "positives": positives, "negatives": negatives,
        "scored_pairs": sum(map(len, candidates)), "scoring_s": round(scored_s, 1), "prompt_style": prompt_style,
        "loss_first_epoch": round(history[0], 4) if history else None,
        "loss_last_epoch": round(history[-1], 4) if history else None,
        "held_out_top1_in_positives": {k: round(v / n, 3) for k, v in hits.items()}
        | {"random": round(positives / max(num_candidates, 1), 3)},
        "held_out_mean_logprob_spread": round(float(np.mean(spread)), 3) if spread else None,
        # every scored pair, for audit (the command writes these to scores.jsonl, not to retriever.json)
        "scored": [{"question": q["question"], "family": q.get("family", ""), "held_out": i in test_ids,
                    "candidates": [{"question": pool[c].question, "family": pool[c].family, "logprob": round(v, 4)}
                                   for c, v in zip(candidates[i], scores[i])]}
                   for i, q in enumerate(queries)],
    }
    return retriever, report
