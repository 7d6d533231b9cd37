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


def test_gemma3_resolves_with_its_own_chat_template():
    import json

    path = resolve_model("gemma3")
    assert json.loads((path / "config.json").read_text())["model_type"].startswith("gemma3")
    from transformers import AutoTokenizer

    text = AutoTokenizer.from_pretrained(path).apply_chat_template(
        [{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True)
    assert text == "<bos><start_of_turn>user\nhi<end_of_turn>\n<start_of_turn>model\n"
    assert resolve_model("gemma3") == path  # assembled and converted once
