"""distill_ray.shards: chunking, atomic shards with metadata, done chunks, the manifest's parameter check."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.dataset as pads
import pytest

from distill_ray.shards import Manifest, ShardSet, chunk_ranges


def test_chunk_ranges_cover_exactly():
    chunks = chunk_ranges(25, 10)
    assert chunks == [range(0, 10), range(10, 20), range(20, 25)]
    assert chunk_ranges(0, 10) == [] and chunk_ranges(5, 10, start=100) == [range(100, 105)]
    with pytest.raises(ValueError):
        chunk_ranges(5, 0)


def test_shards_are_written_atomically_with_metadata(tmp_path):
    shards = ShardSet(tmp_path / "ds")
    assert shards.done() == set()
    shards.write(3, pa.table({"id": ["a", "b"]}), meta={"rows": 2})
    shards.write(0, pa.table({"id": pa.array([], pa.string())}), meta={"rows": 0})   # an empty chunk is done too
    # A killed writer leaves only a hidden temp file: not a done chunk, skipped by readers, cleaned on restart.
    (tmp_path / "ds" / ".part-000001.parquet.tmp.123").write_bytes(b"half a file")
    assert shards.done() == {0, 3}
    assert shards.read_meta(3) == {"rows": 2} and shards.read(3).column("id").to_pylist() == ["a", "b"]
    assert pads.dataset(str(tmp_path / "ds"), format="parquet").to_table().num_rows == 2
    assert shards.remove_temp_files() == 1 and len(list((tmp_path / "ds").iterdir())) == 2
    assert [c for c, _ in shards.iter_tables()] == [0, 3]


def test_manifest_refuses_to_resume_with_other_params(tmp_path):
    manifest = Manifest.for_output(tmp_path / "ds")
    assert manifest.path == tmp_path / "ds.manifest.json"
    manifest.start({"num": 10})
    manifest.update(stats={"kept": 7})
    assert manifest.start({"num": 10})["stats"] == {"kept": 7}   # same params: resume, reports kept
    with pytest.raises(ValueError, match="other parameters"):
        manifest.start({"num": 11})


def test_a_puzzle_job_over_all_families_refuses_to_resume_once_a_family_was_added(tmp_path, monkeypatch):
    """Seed s is family s % F: "all families" is recorded as the list it meant, so a job started before a family
    was added cannot resume with a different seed -> puzzle map."""
    from distill_ray.synth import config
    from distill_ray.tasks.puzzles import list_families

    manifest = Manifest.for_output(tmp_path / "ds")
    manifest.start(config.PuzzleJobConfig(num=10, output=str(tmp_path / "ds")).content_params())
    monkeypatch.setattr(config, "list_families", lambda: [*list_families(), "a_new_family"])
    with pytest.raises(ValueError, match="other parameters"):
        manifest.start(config.PuzzleJobConfig(num=10, output=str(tmp_path / "ds")).content_params())
