"""Deduplication of puzzles: exact (normalized AST) and near-duplicate (MinHash LSH), with a compact index.

Keys are computed per puzzle anywhere (``KeyMaker``, pure, so in parallel tasks); the one ``Deduper`` of a job holds
the index. Exact key: 64-bit hash of the AST dump with every non-builtin name renamed in order of appearance
(``def sat(x: int)`` and ``def sat(n: int)`` collide; whitespace, comments and parentheses do not matter).
Near-duplicate keys: a MinHash (datasketch) of the canonical token 3-grams, cut into LSH bands; two puzzles
whose shingle sets have Jaccard similarity above ``threshold`` share a band with high probability.

Why not datasketch's ``MinHashLSH`` as the index: it keeps every key and a dict entry per band per puzzle
(around a kilobyte per puzzle), and the index is the one thing of the job that grows with N. We keep only the
64-bit band hashes, in sorted numpy runs (a small log-structured set): 8 bytes per key, so 1M puzzles with
1 exact + 5 band keys take ~48 MB. Only kept puzzles enter the index, so it can be rebuilt from the output.
"""

from __future__ import annotations

import ast
import builtins
import hashlib
import re

import numpy as np
from datasketch import MinHash, MinHashLSH

NUM_PERM = 64
THRESHOLD = 0.85   # Jaccard of token 3-grams; procedural puzzles that differ in one constant stay below it
_BUILTINS = frozenset(dir(builtins)) | {"List", "Dict", "Set", "Tuple", "Optional"}
_TOKEN = re.compile(r"'(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\"|\w+|[^\w\s]")


class _Canon(ast.NodeTransformer):
    """Rename user-defined names to v0, v1, ... in order of first appearance; keep builtins and attributes."""

    def __init__(self):
        self.names: dict[str, str] = {}

    def _new(self, name: str) -> str:
        if name in _BUILTINS:
            return name
        return self.names.setdefault(name, f"v{len(self.names)}")

    def visit_Name(self, node):
        node.id = self._new(node.id)
        return node

    def visit_arg(self, node):
        node.arg = self._new(node.arg)
        self.generic_visit(node)
        return node

    def visit_FunctionDef(self, node):
        node.name = self._new(node.name)
        # Docstrings are not part of the puzzle.
        if node.body and isinstance(node.body[0], ast.Expr) and isinstance(node.body[0].value, ast.Constant) \
                and isinstance(node.body[0].value.value, str) and len(node.body) > 1:
            node.body = node.body[1:]
        self.generic_visit(node)
        return node


def canonical_tree(source: str) -> ast.Module:
    return _Canon().visit(ast.parse(source))


def _hash64(data: bytes) -> int:
    # Signed, so keys travel through pandas/Arrow int64 columns as they are.
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "little", signed=True)


class KeyMaker:
    """Exact and LSH band keys of a source; holds the MinHash permutations so they are drawn once."""

    def __init__(self, threshold: float = THRESHOLD, num_perm: int = NUM_PERM):
        lsh = MinHashLSH(threshold=threshold, num_perm=num_perm)   # only to pick (bands, rows) for the threshold
        self.bands, self.rows = lsh.b, lsh.r
        self.num_perm = num_perm
        seed = MinHash(num_perm=num_perm, seed=1)
        self._perms, self._scheme = seed.permutations, seed.scheme

    def exact_key(self, source: str) -> int:
        """64-bit hash of the canonical AST dump (of the raw text when it does not parse: it will not verify)."""
        try:
            text = ast.dump(canonical_tree(source), annotate_fields=False)
        except (SyntaxError, ValueError, RecursionError, MemoryError):
            text = source
        return _hash64(text.encode())

    def band_keys(self, source: str) -> list[int]:
        """LSH band keys of the MinHash of the canonical token 3-grams."""
        try:
            tokens = _TOKEN.findall(ast.unparse(canonical_tree(source)))
        except (SyntaxError, ValueError, RecursionError, MemoryError):
            tokens = _TOKEN.findall(source)
        shingles = {" ".join(tokens[i:i + 3]).encode() for i in range(max(1, len(tokens) - 2))}
        mh = MinHash(num_perm=self.num_perm, permutations=self._perms, scheme=self._scheme)
        mh.update_batch(list(shingles))
        values = mh.hashvalues
        return [_hash64(b"%d:" % i + values[i * self.rows:(i + 1) * self.rows].tobytes()) for i in range(self.bands)]


class KeyIndex:
    """A set of 64-bit keys: a small Python set of recent keys over sorted numpy runs (8 bytes per key).

    Runs are merged when the newer one is at least half the older one's size, so there are O(log n) runs and
    each key is copied O(log n) times in all.
    """

    def __init__(self, buffer: int = 1 << 15):
        self.runs: list[np.ndarray] = []
        self.recent: set[int] = set()
        self.buffer = buffer

    def __len__(self) -> int:
        return len(self.recent) + sum(r.size for r in self.runs)

    @property
    def nbytes(self) -> int:
        return sum(r.nbytes for r in self.runs) + 64 * len(self.recent)

    def in_runs(self, keys: np.ndarray) -> np.ndarray:
        """Vectorized membership of ``keys`` (int64) in the runs (not in ``recent``)."""
        found = np.zeros(keys.shape, dtype=bool)
        for run in self.runs:
            pos = np.minimum(np.searchsorted(run, keys), run.size - 1)
            found |= run[pos] == keys
        return found

    def add(self, key: int) -> None:
        self.recent.add(key)

    def compact(self) -> None:
        """Move ``recent`` into a run once it is large (callers do it between batches, never inside one, so a
        batch's vectorized pre-check of the runs stays valid)."""
        if len(self.recent) < self.buffer:
            return
        self.runs.append(np.array(sorted(self.recent), dtype=np.int64))
        self.recent = set()
        while len(self.runs) > 1 and 2 * self.runs[-1].size >= self.runs[-2].size:
            newer, older = self.runs.pop(), self.runs.pop()
            # Disjoint (only new keys are added): one concatenation sorted in place holds the merge's peak at
            # twice the index (np.union1d's copies and unique mask took about four times).
            merged = np.concatenate((older, newer))
            del older, newer
            merged.sort()
            self.runs.append(merged)


class Deduper:
    """The job's one dedupe state. ``admit`` decides a batch in order: the first occurrence is kept, later ones
    are rejected as ``duplicate_exact`` or ``duplicate_near``; only kept puzzles enter the index.

    Rows with band keys (``None``: skip) are checked against, and enter, the near-duplicate index. The job
    passes band keys for teacher-written puzzles only: procedural puzzles of one family template differ only
    in their constants: of 20,000 (16,146 exact-distinct) LSH at Jaccard 0.85 would drop 9,142 more (57%).
    """

    def __init__(self):
        self.exact = KeyIndex()
        self.bands = KeyIndex()

    def admit(self, exact_keys: list[int], band_keys: list[list[int] | None]) -> list[str]:
        if not exact_keys:
            return []
        seen_exact = self.exact.in_runs(np.array(exact_keys, dtype=np.int64))
        near = [i for i, bands in enumerate(band_keys) if bands]
        seen_band = np.zeros(len(exact_keys), dtype=bool)
        if near:
            bk = np.array([band_keys[i] for i in near], dtype=np.int64)
            seen_band[near] = self.bands.in_runs(bk.ravel()).reshape(bk.shape).any(axis=1)
        fates = []
        for i, key in enumerate(exact_keys):
            bands = band_keys[i] or ()
            if seen_exact[i] or key in self.exact.recent:
                fates.append("duplicate_exact")
            elif seen_band[i] or any(b in self.bands.recent for b in bands):
                fates.append("duplicate_near")
            else:
                fates.append("kept")
                self.exact.add(key)
                for b in bands:
                    self.bands.add(b)
        self.exact.compact()
        self.bands.compact()
        return fates

    @property
    def nbytes(self) -> int:
        return self.exact.nbytes + self.bands.nbytes


def add_keys(batch, scope: str, threshold: float):
    """Dedupe keys of a frame's live rows: ``exact_key`` always, ``band_keys`` for rows in the near-duplicate
    scope. Computed where rows are made, before verification: keys of rows that later fail are simply unused."""
    maker = _maker(threshold)
    exact, bands = [], []
    for sat, source, reject in zip(batch["sat"], batch["source"], batch["reject"]):
        alive = not reject
        exact.append(maker.exact_key(sat) if alive else 0)
        bands.append(maker.band_keys(sat) if alive and near_scope(source, scope) else [])
    batch["exact_key"] = exact
    batch["band_keys"] = bands
    return batch


_MAKERS: dict = {}


def _maker(threshold: float) -> "KeyMaker":
    """One KeyMaker per process and threshold (building one draws the MinHash permutations)."""
    if threshold not in _MAKERS:
        _MAKERS[threshold] = KeyMaker(threshold)
    return _MAKERS[threshold]


def near_scope(source: str, scope: str) -> bool:
    """Does a row of this source get the near-duplicate check? (``scope``: "teacher" or "all")."""
    return scope == "all" or source == "teacher"
