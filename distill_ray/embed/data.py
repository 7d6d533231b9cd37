"""The similarity data of ``distill-ray disco``, built from the embedded puzzle families (no download).

A puzzle's text is its ``sat`` source. Two puzzles are similar when they pose the same kind of problem, which
their words show only in part (every int puzzle starts ``def sat(x: int) -> bool:``; ``chain`` and ``add_const``
both add and compare): graded labels **2** same family, **1** another family of the same topic (arithmetic,
strings, games, ...), **0** another topic.

- Families: ``unseen`` of the 32 are held out of all training (two from each of the largest topics, so that
  held-out pairs of label 1 exist); the others are *seen*.
- Train (seen families only): the train-split puzzles at every difficulty. Phase 1 reads their texts unlabelled;
  phase 2 draws (anchor, positive) pairs of one family from them, one pair per family in a batch (so no in-batch
  negative is secretly a positive).
- Eval: label-balanced pairs of eval-split puzzles (never a train text), among the seen families (new puzzles of
  known kinds) and among the unseen families (kinds no training phase saw).
"""

from __future__ import annotations

import random
from collections import defaultdict
from dataclasses import dataclass, field

LABELS = {2: "same family", 1: "same topic, another family", 0: "another topic"}


@dataclass
class SimilarityData:
    train: dict[str, list[str]]                 # seen family -> its train texts
    eval: dict[str, list[tuple[str, str, int]]]  # "seen" / "unseen" -> (text, text, label) pairs
    unseen_families: list[str] = field(default_factory=list)
    family_of: dict[str, str] = field(default_factory=dict)   # every text -> its puzzle family

    @property
    def texts(self) -> list[str]:
        """Phase 1's unlabelled texts: every train text, family by family."""
        return [text for texts in self.train.values() for text in texts]

    def eval_texts(self) -> list[str]:
        return sorted({text for pairs in self.eval.values() for a, b, _ in pairs for text in (a, b)})


def topic(name: str) -> str:
    from distill_ray.tasks.families import FAMILIES

    return FAMILIES[name].topic


def label(family_a: str, family_b: str) -> int:
    """2 same family, 1 same topic, 0 otherwise."""
    return 2 if family_a == family_b else int(topic(family_a) == topic(family_b))


def choose_unseen(count: int, seed: int) -> list[str]:
    """``count`` families (even) to hold out: two from each topic with at least four families (so each still
    has two seen), topics in a seeded order."""
    from distill_ray.tasks.families import FAMILIES

    by_topic = defaultdict(list)
    for name, fam in FAMILIES.items():
        by_topic[fam.topic].append(name)
    topics = sorted(t for t, names in by_topic.items() if len(names) >= 4)
    if count % 2 or count // 2 > len(topics):
        raise ValueError(f"disco.unseen_families must be even and at most {2 * len(topics)} (two from each of "
                         f"the topics with four or more families: {topics}), got {count}")
    rng = random.Random(f"disco-unseen-{seed}")
    rng.shuffle(topics)
    return sorted(name for t in topics[:count // 2] for name in rng.sample(sorted(by_topic[t]), 2))


def build(*, train_per_family: int, eval_per_family: int, eval_pairs: int, unseen_families: int,
          seed: int, difficulties: tuple[int, ...] = (1, 2, 3)) -> SimilarityData:
    """Train texts (``train_per_family`` per family and difficulty) and ``eval_pairs`` eval pairs of each label
    in each eval split (from ``eval_per_family`` eval puzzles per family and difficulty)."""
    from distill_ray.tasks.families import FAMILIES
    from distill_ray.tasks.puzzles import load_puzzles

    unseen = choose_unseen(unseen_families, seed)
    train, held, family_of = defaultdict(list), defaultdict(list), {}
    for difficulty in difficulties:
        problems, evals = load_puzzles(num_train=train_per_family * len(FAMILIES),
                                       num_eval=eval_per_family * len(FAMILIES), seed=seed, difficulty=difficulty)
        for problem in problems + evals:
            family_of[problem["question"]] = problem["family"]
        for problem in problems:
            if problem["family"] not in unseen:
                train[problem["family"]].append(problem["question"])
        for problem in evals:
            held[problem["family"]].append(problem["question"])
    train_texts = {text for texts in train.values() for text in texts}
    held = {name: [t for t in dict.fromkeys(texts) if t not in train_texts] for name, texts in held.items()}
    train = {name: list(dict.fromkeys(texts)) for name, texts in train.items()}
    rng = random.Random(f"disco-eval-{seed}")
    splits = {"seen": {n: t for n, t in held.items() if n not in unseen},
              "unseen": {n: t for n, t in held.items() if n in unseen}}
    return SimilarityData(train=dict(train), eval={name: eval_pairs_of(pool, eval_pairs, rng)
                                                   for name, pool in splits.items()}, unseen_families=unseen,
                            family_of=family_of)


def eval_pairs_of(pool: dict[str, list[str]], per_label: int, rng: random.Random) -> list[tuple[str, str, int]]:
    """``per_label`` distinct unordered pairs of each label from ``pool`` (family -> texts), shuffled."""
    families = sorted(pool)
    candidates = {2: [(f, f) for f in families if len(pool[f]) >= 2],
                  1: [(f, g) for f in families for g in families if f < g and label(f, g) == 1],
                  0: [(f, g) for f in families for g in families if f < g and label(f, g) == 0]}
    pairs, seen = [], set()
    for value, family_pairs in candidates.items():
        if not family_pairs:
            raise ValueError(f"no eval pair of label {value} ({LABELS[value]}) among families {families}")
        made, tries = 0, 0
        while made < per_label:
            tries += 1
            if tries > 100 * per_label:
                raise ValueError(f"only {made} distinct eval pairs of label {value} ({LABELS[value]}) among "
                                 f"families {families}; {per_label} asked: more eval puzzles per family")
            f, g = rng.choice(family_pairs)
            a, b = (rng.sample(pool[f], 2) if f == g else (rng.choice(pool[f]), rng.choice(pool[g])))
            key = frozenset((a, b))
            if key not in seen:
                seen.add(key)
                pairs.append((a, b, value))
                made += 1
    rng.shuffle(pairs)
    return pairs


def pair_batches(train: dict[str, list[str]], batch_size: int, steps: int, seed: int) -> list[list[tuple[str, str]]]:
    """``steps`` batches of ``batch_size`` (anchor, positive) pairs: two different texts of one family, each pair
    from another family (seeded)."""
    families = sorted(f for f, texts in train.items() if len(texts) >= 2)
    if batch_size > len(families):
        raise ValueError(f"disco.batch_size {batch_size} is more than the {len(families)} seen families: a batch "
                         "holds one pair per family (another pair of the same family would be a false negative)")
    rng = random.Random(f"disco-pairs-{seed}")
    return [[tuple(rng.sample(train[f], 2)) for f in rng.sample(families, batch_size)] for _ in range(steps)]
