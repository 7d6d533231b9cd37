from distill_ray.models import hf_copy_of_gguf, resolve_model, smollm2_gguf


def test_the_embedded_teacher_resolves_to_a_cached_hf_directory():
    path = resolve_model("smollm2")
    assert (path / "config.json").exists() and (path / "tokenizer.json").exists()
    assert smollm2_gguf().suffix == ".gguf"
    assert hf_copy_of_gguf(smollm2_gguf()) == path  # converted once, then reused


def test_an_unknown_model_is_a_clear_error(tmp_path):
    import pytest

    with pytest.raises(FileNotFoundError, match="neither"):
        resolve_model(str(tmp_path / "missing"))
