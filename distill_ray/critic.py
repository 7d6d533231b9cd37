"""A correctness critic: (problem, candidate program) -> the probability that the verifier passes it.

CodeRL trains a critic on its unit tests' outcomes and Symbolic Knowledge Distillation filters generations with
one; here the labels are the verifier's own verdicts on a generated dataset. The model is a logistic regression
over hashed token n-grams of the program (unigrams and bigrams), the tokens of the problem (its ``sat`` or
question) and whether the completion finished: small, trained in seconds on CPU, scored without torch, and
strong where the teacher's failures leave marks in the text (a wrong return type, a truncated program, a
family it cannot solve). It is not a reasoner: it ranks and filters, the verifier still decides where it can.

Rows are split by problem (a hash of ``task_id``) into train, calibration and test parts, so no problem's
candidates are in two parts: the threshold is chosen on the calibration part (the most recall at the target
precision), and the report measures precision, recall, ROC AUC and reranking on the test part only.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

TOKEN = re.compile(r"[A-Za-z_]\w*|\d+|\S")
MAX_PROGRAM_CHARS = 20_000   # what a candidate sent is read this far, no further: bounded work per row
MAX_CONTEXT_CHARS = 4_000
DECIDED = ("pass", "fail", "error", "timeout", "memory")   # verdicts that label a row (not "answered")
WEIGHTS, REPORT = "critic.npz", "critic.json"


def features(program, context, finished, bits: int) -> tuple[np.ndarray, np.ndarray]:
    """(hashed feature ids, values) of one candidate: log(1 + count) of each n-gram, problem token and flag."""
    toks = TOKEN.findall((program if isinstance(program, str) else "")[:MAX_PROGRAM_CHARS])
    names = ["P:" + t for t in toks] + ["B:" + a + " " + b for a, b in zip(toks, toks[1:])]
    names += ["C:" + t for t in set(TOKEN.findall((context if isinstance(context, str) else "")[:MAX_CONTEXT_CHARS]))]
    names += [f"finished:{bool(finished)}", f"length:{min(len(toks) // 10, 20)}", "bias"]
    ids, counts = np.unique(np.array([zlib.crc32(n.encode()) for n in names], dtype=np.uint64) % (1 << bits),
                            return_counts=True)
    return ids.astype(np.int64), np.log1p(counts).astype(np.float32)


def row_features(rows: pd.DataFrame, bits: int) -> list[tuple[np.ndarray, np.ndarray]]:
    context = rows["sat"].where(rows["sat"].notna(), rows["question"]) if "sat" in rows else rows["question"]
    return [features(p, c, f, bits) for p, c, f in zip(rows["program"], context, rows["finished"])]


@dataclass
class Critic:
    weights: np.ndarray    # one per hashed feature (2**bits)
    threshold: float       # accept where the score is at least this

    @property
    def bits(self) -> int:
        return int(self.weights.size).bit_length() - 1

    def score(self, rows: pd.DataFrame) -> np.ndarray:
        """P(pass) of every row (columns program, sat and/or question, finished)."""
        logits = [float(values @ self.weights[ids]) for ids, values in row_features(rows, self.bits)]
        return 1.0 / (1.0 + np.exp(-np.clip(np.array(logits, dtype=np.float64), -60, 60)))

    def digest(self) -> str:
        """What identifies this critic's decisions (weights and threshold), for a resumed run's settings."""
        return hashlib.sha256(self.weights.tobytes() + repr(self.threshold).encode()).hexdigest()[:16]

    def save(self, directory: Path, report: dict) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(directory / WEIGHTS, weights=self.weights, threshold=self.threshold)
        (directory / REPORT).write_text(json.dumps(report, indent=2) + "\n")

    @classmethod
    def load(cls, directory: str | Path) -> "Critic":
        path = Path(directory) / WEIGHTS
        if not path.exists():
            raise FileNotFoundError(f"no critic at {path}: train one with `distill-ray critic`")
        with np.load(path) as data:
            return cls(weights=data["weights"].astype(np.float32), threshold=float(data["threshold"]))


def fit(rows: pd.DataFrame, labels: np.ndarray, bits: int = 16, l2: float = 1e-3, steps: int = 200) -> np.ndarray:
    """Logistic regression weights (L-BFGS on a sparse design matrix, mean log loss + l2 * |w|^2)."""
    import torch

    feats = row_features(rows, bits)
    row_ids = np.concatenate([np.full(len(ids), i) for i, (ids, _) in enumerate(feats)])
    x = torch.sparse_coo_tensor(np.stack([row_ids, np.concatenate([ids for ids, _ in feats])]),
                                np.concatenate([v for _, v in feats]), (len(feats), 1 << bits),
                                check_invariants=True).coalesce()
    y = torch.tensor(labels, dtype=torch.float32)
    w = torch.zeros(1 << bits, requires_grad=True)
    opt = torch.optim.LBFGS([w], max_iter=steps, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        logits = torch.sparse.mm(x, w.unsqueeze(1)).squeeze(1)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, y) + l2 * (w * w).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return w.detach().numpy().astype(np.float32)


def split_of(task_id: str, held_out: float) -> str:
    """'train', 'calibrate' or 'test' for a problem, from a hash of its id (stable across runs and row order)."""
    u = zlib.crc32(str(task_id).encode()) / 2**32
    return "train" if u >= held_out else "calibrate" if u < held_out / 2 else "test"


def threshold_for_precision(scores: np.ndarray, labels: np.ndarray, target: float) -> float:
    """The threshold that accepts the most passing rows at precision >= target, and of those the highest (a
    lower one would only add failing rows); where none reaches the target, the one with the best precision.
    Ties are never split: a threshold accepts every row with its score."""
    if not len(scores):
        return 0.5
    order = np.argsort(-scores, kind="stable")
    ranked = scores[order]
    hits = np.cumsum(labels[order])
    precision = hits / np.arange(1, len(order) + 1)
    cuts = [k for k in range(len(order)) if k + 1 == len(order) or ranked[k] > ranked[k + 1]]
    valid = [k for k in cuts if precision[k] >= target]
    if not valid:
        return float(ranked[max(cuts, key=lambda k: (precision[k], -k))])
    best = max(hits[k] for k in valid)
    return float(ranked[min(k for k in valid if hits[k] == best)])


def auc(scores: np.ndarray, labels: np.ndarray) -> float | None:
    """ROC AUC: the chance that a passing row outscores a failing one (ties count half)."""
    pos, neg = scores[labels], scores[~labels]
    if not len(pos) or not len(neg):
        return None
    greater = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    return float(greater / (len(pos) * len(neg)))


def top_pick_pass(task_ids, scores, passed) -> tuple[float, int]:
    """(the pass rate of each problem's top-scored row, the number of problems); a tie goes to the row that
    comes first."""
    frame = pd.DataFrame({"task": np.asarray(task_ids), "score": np.asarray(scores), "passed": np.asarray(passed)})
    top = frame.sort_values("score", ascending=False, kind="stable").groupby("task").head(1)
    return (float(top["passed"].astype(bool).mean()) if len(top) else math.nan), int(len(top))


def evaluate(scores: np.ndarray, labels: np.ndarray, task_ids: pd.Series, threshold: float) -> dict:
    """Precision/recall at threshold, AUC, and reranking: the pass rate of each problem's top-scored candidate
    against a random candidate's (the mean pass rate per problem) and the best possible (any candidate passes)."""
    accepted = scores >= threshold
    per_task = pd.Series(labels).groupby(task_ids.to_numpy())
    return {"rows": int(len(labels)), "problems": int(per_task.ngroups),
            "base_rate": _round(labels.mean()) if len(labels) else None,
            "precision": _round(labels[accepted].mean()) if accepted.any() else None,
            "recall": _round((accepted & labels).sum() / labels.sum()) if labels.any() else None,
            "accepted": int(accepted.sum()), "auc": _round(auc(scores, labels)),
            "rerank_top1_pass": _round(top_pick_pass(task_ids, scores, labels)[0]),
            "random_pick_pass": _round(per_task.mean().mean()),
            "any_pass": _round(per_task.any().mean())}


def train_critic(rows: pd.DataFrame, target_precision: float, held_out: float, bits: int, l2: float) -> tuple:
    """(Critic, report) from a dataset's verified rows (see the module docstring for the splits)."""
    rows = rows[rows["status"].isin(DECIDED)].reset_index(drop=True)
    split = rows["task_id"].map(lambda t: split_of(t, held_out))
    labels = rows["passed"].fillna(False).astype(bool).to_numpy()
    parts = {name: (split == name).to_numpy() for name in ("train", "calibrate", "test")}
    empty = [name for name, mask in parts.items() if not mask.any()]
    if empty or len(set(labels[parts["train"]])) < 2:
        raise ValueError(f"critic: too few verified rows to train and hold out ({len(rows)} rows; empty parts "
                         f"{empty or 'none'}, train labels {sorted(set(labels[parts['train']]))}): generate more")
    weights = fit(rows[parts["train"]], labels[parts["train"]], bits, l2)
    critic = Critic(weights, threshold=0.5)
    scores = critic.score(rows)
    critic.threshold = threshold_for_precision(scores[parts["calibrate"]], labels[parts["calibrate"]],
                                               target_precision)
    report = {"target_precision": target_precision, "threshold": _round(critic.threshold),
              "train_rows": int(parts["train"].sum()),
              "calibrate": evaluate(scores[parts["calibrate"]], labels[parts["calibrate"]],
                                    rows["task_id"][parts["calibrate"]], critic.threshold),
              "test": evaluate(scores[parts["test"]], labels[parts["test"]], rows["task_id"][parts["test"]],
                               critic.threshold)}
    return critic, report


def _round(x) -> float | None:
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else round(float(x), 4)
