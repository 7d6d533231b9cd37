"""EPR (``distill_ray/epr.py``): the teacher's likelihood scores, the contrastive retriever, ``exemplars: learned``."""

import random

import numpy as np
import pytest
import torch

from distill_ray import epr
from distill_ray.prompts import Exemplar, choose_exemplars


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import AutoTokenizer

    from distill_ray.models import resolve_model

    return AutoTokenizer.from_pretrained(resolve_model("smollm2"))


@pytest.fixture(scope="module")
def tiny_model(tokenizer):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=512)
    return LlamaForCausalLM(config).eval()


def _puzzle(i: int, family: str = "add") -> dict:
    return {"kind": "p3", "family": family, "question": f"def sat(x: int) -> bool:\n    return x + {i} == {2 * i + 3}",
            "reference": f"def sol():\n    return {2 * i + 3} - {i}"}


def test_likelihood_of_a_completion_matches_a_plain_forward_pass(tokenizer, tiny_model):
    shot = Exemplar("def sat(x: int) -> bool:\n    return x * 2 == 8", "def sol():\n    return 8 // 2", "mul")
    problem = _puzzle(4)
    prefix, completion = epr.completion_of(problem)
    assert prefix == "def sol():\n    return " and completion == "11 - 4"
    prompt = epr.prompt_text(tokenizer, problem, [shot])
    assert prompt.endswith("<|im_start|>assistant\n" + prefix)
    # By hand: one unpadded forward pass over prompt + completion, the completion tokens' log-probabilities summed.
    p = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    c = tokenizer(completion, add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        logp = torch.log_softmax(tiny_model(torch.tensor([p + c])).logits[0].float(), -1)
    expected = sum(float(logp[len(p) - 1 + j, t]) for j, t in enumerate(c))
    # Batched with a longer and a shorter pair (left padding, completions of different lengths): the same value.
    pairs = [(prompt, completion), (prompt + " extra words here", "1"), ("short", "def f(): return 123456")]
    got = epr.sequence_logprobs(tiny_model, tokenizer, pairs, batch_size=3)
    assert got[0] == pytest.approx(expected, abs=1e-4)
    assert epr.sequence_logprobs(tiny_model, tokenizer, pairs[:1])[0] == pytest.approx(expected, abs=1e-4)


def test_scoring_and_labels_follow_the_scores(tokenizer, tiny_model):
    pool = [Exemplar(p["question"], p["reference"], p["family"]) for p in map(_puzzle, range(10, 16))]
    queries = [_puzzle(1), _puzzle(2)]
    candidates = epr.candidate_sets(queries, pool, 4, seed=0)
    assert all(len(c) == 4 and len(set(c)) == 4 for c in candidates)
    scores = epr.score_candidates(tiny_model, tokenizer, queries, pool, candidates, batch_size=3)
    assert [len(s) for s in scores] == [4, 4] and all(np.isfinite(scores[0]))
    pos, neg = epr.label(candidates, scores, positives=1, negatives=2)
    for cands, s, p, n in zip(candidates, scores, pos, neg):
        assert p == [cands[int(np.argmax(s))]] and cands[int(np.argmin(s))] in n and len(n) == 2


def test_contrastive_loss_is_minimal_when_positives_are_separable():
    eye = torch.eye(8)
    q, pos, neg = eye[:4], eye[:4], eye[4:]           # each query is its own positive, orthogonal to the rest
    no_mask = torch.zeros(4, 8, dtype=torch.bool)
    separable = epr.contrastive_loss(q, pos, neg, no_mask, temperature=0.05)
    assert float(separable) < 1e-6
    confused = epr.contrastive_loss(q, neg, pos, no_mask, temperature=0.05)   # the positive is the hard negative
    assert float(confused) > 10
    # A column that is also a positive of the query is masked out of the softmax, not counted as a negative.
    same = torch.nn.functional.normalize(torch.ones(4, 8), dim=-1)
    mask = ~torch.eye(4, 8, dtype=torch.bool)
    assert float(epr.contrastive_loss(same, same, same, mask, temperature=0.05)) < 1e-6


def _synthetic(keys: int = 10, per_key: int = 6, seed: int = 0):
    """Queries that name a key (``zq<k>``) among noise words; the positive exemplar is the one that carries
    ``ans<k>`` (a different token: only training can link the two), the negatives are the others."""
    rng = random.Random(seed)
    noise = [f"noise{i}" for i in range(40)]
    pool = [Exemplar(" ".join([f"ans{k}"] + rng.sample(noise, 3)), f"sol {k}") for k in range(keys)]
    rows = [(" ".join([f"zq{k}"] + rng.sample(noise, 4)), k) for k in range(keys) for _ in range(per_key)]
    rng.shuffle(rows)
    return pool, rows


def test_retriever_learns_a_recoverable_positive_and_beats_random():
    pool, rows = _synthetic()
    train, test = rows[:45], rows[45:]
    positives = [[k] for _, k in train]
    negatives = [[j for j in range(len(pool)) if j != k][:3] for _, k in train]
    retriever, history = epr.train_retriever([q for q, _ in train], pool, positives, negatives, buckets=2 ** 10,
                                             dim=32, epochs=30, batch_size=8, seed=0)
    assert history[-1] < history[0] * 0.5                   # training lowers the loss
    hits = sum(retriever.top_k(pool, q, 1)[0] == pool[k] for q, k in test)
    assert hits / len(test) > 0.6                           # random would be 1 / 10


def test_save_and_load_round_trip(tmp_path):
    pool, rows = _synthetic(keys=4, per_key=3)
    retriever, _ = epr.train_retriever([q for q, _ in rows], pool, [[k] for _, k in rows], [[] for _ in rows],
                                       buckets=2 ** 8, dim=16, epochs=2, seed=1)
    retriever.save(tmp_path / "r", {"note": "test"})
    loaded = epr.Retriever.load(tmp_path / "r")
    assert np.array_equal(loaded.query_weights, retriever.query_weights)
    assert np.array_equal(loaded.exemplar_weights, retriever.exemplar_weights)
    assert loaded.digest == retriever.digest and len(loaded.digest) == 64
    assert [s for s in loaded.top_k(pool, rows[0][0], 3)] == retriever.top_k(pool, rows[0][0], 3)
    # A tampered npz is refused; a missing directory says how to make one.
    np.savez(tmp_path / "r" / "retriever.npz", query_weights=retriever.query_weights * 2,
             exemplar_weights=retriever.exemplar_weights)
    with pytest.raises(ValueError, match="does not match"):
        epr.Retriever.load(tmp_path / "r")
    with pytest.raises(FileNotFoundError, match="distill-ray retriever"):
        epr.Retriever.load(tmp_path / "missing")


def test_learned_exemplars_need_a_retriever():
    from distill_ray.config import ConfigError, load_config

    with pytest.raises(ConfigError, match="retriever"):
        load_config(None, ["prompt.exemplars=learned"])
    assert load_config(None, ["prompt.exemplars=learned", "prompt.retriever=somewhere"]).prompt.retriever == "somewhere"
    with pytest.raises(ValueError, match="needs a retriever"):
        choose_exemplars([Exemplar("q", "a")], 1, "learned", seed=0, question="x")


def test_learned_strategy_never_returns_the_question_itself(tmp_path):
    pool, rows = _synthetic(keys=5, per_key=2)
    retriever, _ = epr.train_retriever([q for q, _ in rows], pool, [[k] for _, k in rows], [[] for _ in rows],
                                       buckets=2 ** 8, dim=16, epochs=3, seed=0)
    retriever.save(tmp_path / "r")
    for shot in pool:   # the query is a pool exemplar: its own text would score highest
        for source in (retriever, str(tmp_path / "r")):
            shots = choose_exemplars(pool, 3, "learned", seed=0, question=shot.question, retriever=source)
            assert len(shots) == 3 and shot not in shots


def test_prompt_stage_uses_the_learned_retriever(tmp_path):
    import json

    import pandas as pd

    from distill_ray.config import PromptConfig
    from distill_ray.stages import prompt as prompt_stage

    pool, rows = _synthetic(keys=5, per_key=2)
    retriever, _ = epr.train_retriever([q for q, _ in rows], pool, [[k] for _, k in rows], [[] for _ in rows],
                                       buckets=2 ** 8, dim=16, epochs=20, seed=0)
    retriever.save(tmp_path / "r")
    stage = prompt_stage.build(PromptConfig(num_shots=1, exemplars="learned", retriever=str(tmp_path / "r")), pool, 0)
    batch = pd.DataFrame({"kind": ["p3"], "question": [rows[0][0]], "family": [""]})
    messages = json.loads(stage.fn(batch, **stage.fn_kwargs)["messages"][0])
    assert messages[1]["content"] == retriever.top_k(pool, rows[0][0], 1)[0].question


def test_retriever_command_scores_trains_and_writes_a_report(tmp_path, tokenizer, tiny_model):
    """``distill-ray retriever`` end to end with a tiny teacher: the scored problems follow the run's own
    train problems (never one a generate with this config solves), the retriever loads back, the report
    compares it with BM25 and same-family retrieval."""
    import json

    from distill_ray import workflow
    from distill_ray.cli import main, parser
    from distill_ray.config import load_config

    teacher = tmp_path / "teacher"
    tiny_model.save_pretrained(teacher)
    tokenizer.save_pretrained(teacher)
    args = parser().parse_args(["retriever", "--out", "x", "--queries", "5", "--candidates", "3"])
    assert (args.out, args.queries, args.candidates) == ("x", 5, 3)
    overrides = ["task.source=puzzles", "task.num_train=4", "task.num_eval=1", "prompt.pool_size=6",
                 f"teacher.model={teacher}", f"output_dir={tmp_path / 'run'}", "seed=3"]
    cfg = load_config(None, overrides)
    report = workflow.retriever(cfg, str(tmp_path / "r"), num_queries=8, num_candidates=3, epochs=2)
    assert report["queries"] == 8 and report["held_out_queries"] == 2 and report["scored_pairs"] == 24
    assert set(report["held_out_top1_in_positives"]) == {"retriever", "bm25", "retrieved", "random"}
    saved = json.loads((tmp_path / "r" / "retriever.json").read_text())
    _, train, _ = workflow.load_task(cfg.model_copy(update={"task": cfg.task.model_copy(update={"num_train": 12})}))
    assert saved["report"]["query_task_ids"] == [p["task_id"] for p in train[4:12]]
    assert epr.Retriever.load(tmp_path / "r").digest == report["digest"]
    scored = [json.loads(line) for line in (tmp_path / "r" / "scores.jsonl").read_text().splitlines()]
    assert [r["task_id"] for r in scored] == saved["report"]["query_task_ids"] and "scored" not in saved["report"]
    assert all(len(r["candidates"]) == 3 for r in scored) and sum(r["held_out"] for r in scored) == 2
    assert main(["generate", "--set", "prompt.exemplars=learned"]) == 2   # no retriever: a config error
