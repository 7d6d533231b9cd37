"""Deduplication: canonical exact keys, MinHash LSH near duplicates, the compact index, and planted duplicates
across shards (one sink writing several shards, and a new sink rebuilt from shards already written)."""

from __future__ import annotations

import pandas as pd
import pyarrow.parquet as pq

from distill_ray.synth.config import Plan
from distill_ray.synth.dedupe import Deduper, KeyIndex, KeyMaker
from distill_ray.stages.generate import PUZZLE_COLUMNS, procedural_rows
from distill_ray.synth.dedupe import add_keys
from distill_ray.stages.sink import PuzzleSink, rejected_dir
from distill_ray.tasks import list_families

SAT = "def sat(li: List[int], target=19) -> bool:\n    return len(li) == 3 and sum(li) == target and li[0] > 2"
RENAMED = "def sat(xs: List[int],   target=19) -> bool:\n    # same puzzle\n    return (len(xs) == 3 and sum(xs) == target and xs[0] > 2)"
NEAR = SAT.replace("li[0] > 2", "li[0] > 2 and li[1] >= 0")
OTHER = "def sat(s: str) -> bool:\n    return s.count('ab') == 4 and len(s) == 11"


def test_exact_key_ignores_names_layout_and_comments_but_not_constants():
    maker = KeyMaker()
    assert maker.exact_key(SAT) == maker.exact_key(RENAMED)
    assert maker.exact_key(SAT) != maker.exact_key(SAT.replace("19", "20"))
    assert maker.exact_key(SAT) != maker.exact_key(OTHER)


def test_near_duplicates_share_a_band_and_different_puzzles_do_not():
    maker = KeyMaker(threshold=0.6)
    near, other = set(maker.band_keys(NEAR)), set(maker.band_keys(OTHER))
    assert set(maker.band_keys(SAT)) & near
    assert not set(maker.band_keys(SAT)) & other


def test_deduper_keeps_first_occurrence_only():
    maker, dedupe = KeyMaker(threshold=0.6), Deduper()
    sources = [SAT, OTHER, RENAMED, NEAR, SAT]
    fates = dedupe.admit([maker.exact_key(s) for s in sources], [maker.band_keys(s) for s in sources])
    assert fates == ["kept", "kept", "duplicate_exact", "duplicate_near", "duplicate_exact"]
    # Without band keys a row skips the near-duplicate check (procedural rows by default).
    assert Deduper().admit([maker.exact_key(SAT), maker.exact_key(NEAR)], [None, None]) == ["kept", "kept"]


def test_key_index_is_exact_across_compactions():
    index = KeyIndex(buffer=8)
    dedupe = Deduper()
    dedupe.exact = index
    keys = list(range(-50, 50))
    assert dedupe.admit(keys, [None] * len(keys)) == ["kept"] * 100
    assert len(index.runs) >= 1 and len(index) == 100 and index.nbytes < 100 * 64 + 800
    again = dedupe.admit(keys[::7] + [1000], [None] * 16)
    assert again == ["duplicate_exact"] * 15 + ["kept"]


def rows(ids, chunk, sats, source="teacher") -> pd.DataFrame:
    df = pd.DataFrame([dict(id=i, chunk=chunk, source=source, family=source, difficulty=0, ans_type="List[int]",
                            sat=s, sol="def sol():\n    return [3, 8, 8]", trusted=False, reject="", detail="")
                       for i, s in zip(ids, sats)], columns=list(PUZZLE_COLUMNS))
    return add_keys(df, scope="teacher", threshold=0.6)


def test_planted_duplicates_are_dropped_across_shards(tmp_path):
    out = str(tmp_path / "ds")
    plan = Plan(num=200, chunk_size=100)
    families = list_families()
    chunk0 = procedural_rows(pd.DataFrame({"id": range(100)}), families, [3], 0, 100, frozenset())
    chunk0 = add_keys(pd.concat([chunk0.iloc[:96], rows(["t0", "t1", "t2", "t3"], 0, [SAT, OTHER, SAT, NEAR])
                                 .drop(columns=["exact_key", "band_keys"])], ignore_index=True),
                      scope="teacher", threshold=0.6)
    sink = PuzzleSink(out, plan.__dict__, scope="teacher", threshold=0.6)
    sink(chunk0)
    kept0 = pq.read_table(f"{out}/part-000000.parquet").to_pandas()
    assert {"t0", "t1"} <= set(kept0["id"]) and not {"t2", "t3"} & set(kept0["id"])   # within one shard
    # Chunk 1 plants copies of chunk 0's puzzles: a procedural sat renamed and reformatted, and teacher rows.
    original = chunk0["sat"].iat[0]
    assert "(x: int)" in original and "return x " in original
    planted = original.replace("(x: int)", "(n: int)").replace("return x ", "return (n ") + ")"
    batch1 = procedural_rows(pd.DataFrame({"id": range(100, 196)}), families, [3], 0, 100, frozenset())
    batch1 = add_keys(batch1, scope="teacher", threshold=0.6)
    batch1 = pd.concat([batch1, rows(["p_exact", "p_renamed", "p_near", "p_near2"], 1,
                                     [planted, RENAMED, NEAR, NEAR])], ignore_index=True)
    # A fresh sink rebuilds its index from shard 0 (what a resumed or restarted job does).
    PuzzleSink(out, plan.__dict__, scope="teacher", threshold=0.6)(batch1)
    kept1 = set(pq.read_table(f"{out}/part-000001.parquet").column("id").to_pylist())
    rejected = pq.read_table(f"{rejected_dir(out)}/part-000001.parquet").to_pandas().set_index("id")["reason"]
    planted_fates = {"p_exact": "duplicate_exact", "p_renamed": "duplicate_exact", "p_near": "duplicate_near",
                     "p_near2": "duplicate_near"}
    assert {k: rejected[k] for k in planted_fates} == planted_fates
    # Any other rejection is a natural exact duplicate (small puzzle spaces) of a puzzle kept in shard 0 or 1.
    maker = KeyMaker()
    kept_keys = {maker.exact_key(x) for x in pd.concat([kept0, pq.read_table(f"{out}/part-000001.parquet")
                                                        .to_pandas()])["sat"]}
    natural = batch1[batch1["id"].isin(set(rejected.index) - set(planted_fates))]
    assert all(rejected[i] == "duplicate_exact" for i in natural["id"])
    assert all(maker.exact_key(x) in kept_keys for x in natural["sat"])
    assert len(kept1) + len(rejected) == 100 and not kept1 & set(kept0["id"])
