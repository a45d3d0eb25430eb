"""SAEs: load from the hub (when reachable) or from disk, train with SAELens' own runner, measure quality.

The real SmolLM2 SAE (TopK, d_sae 2304, k 32 on ``blocks.15.hook_resid_post``) is trained here, offline, on an
English corpus built from Python's own documentation (``pydoc_data.topics`` plus standard-library docstrings read
with ``ast``, nothing imported). It is built once per cache dir and seed, under a file lock, into a temporary folder
that is renamed into place only when complete, so a half-written SAE is never loaded. Build it with one command::

    python -m pytest_mechclaim.saes build-smollm2 --cache-dir .mechclaim/cache --seed 0

SAELens' runner logs no metrics with wandb off, so quality (explained variance, CE loss recovered, L0, dead-feature
share; ``sae_quality.py``) is measured on held-out text and saved with the SAE (``mechclaim.json``), together with
the corpus provenance and its sha256.
"""

from __future__ import annotations

import argparse
import ast
import functools
import hashlib
import json
import os
import random
import shutil
import sys
import sysconfig
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

from .models import COMPLETE_MARKER, ModelUnavailable, library_versions, require_hub
from .progress import step
from .quiet import dependency_deprecations
from .sae_quality import sae_quality

PROVENANCE_FILE = "mechclaim.json"
SMOLLM2_SAE_HOOK = "blocks.15.hook_resid_post"
SMOLLM2_SAE_D_SAE = 2304
SMOLLM2_SAE_K = 32
SMOLLM2_SAE_TOKENS = 200_000
CONTEXT_SIZE = 128
# One in ten documents (chosen by the document's own hash, not the seed) is held out for quality measurement.
HELDOUT_MODULUS = 10
# Docstrings shorter than this are mostly one-line summaries: little context for an LM.
MIN_DOCSTRING_CHARS = 200
# sae-lens 6.54 warnings that do not apply here, filtered exactly: it compares dataset *rows* with training *tokens*
# (and warns of repeated epochs that do not happen), copy-constructs its own token tensors, and advises
# HookedSAETransformer.from_pretrained_no_processing whenever an SAE records its model's weight processing (the
# compatibility gate checks that processing instead).
SAELENS_TRAINING_NOISE = (
    "The training dataset contains fewer samples",
    "To copy construct from a tensor",
)
SAELENS_LOAD_NOISE = r"\s*This SAE has non-empty model_from_pretrained_kwargs"
# Standard-library folders that are tests or vendored code, not documentation prose.
SKIPPED_STDLIB_PARTS = {"test", "tests", "site-packages", "idlelib", "lib2to3", "__pycache__"}


# --------------------------------------------------------------------------------------------------- the corpus
@dataclass(frozen=True)
class Corpus:
    """Offline English text with its provenance: where every document came from, and a hash of all of them."""

    name: str
    documents: tuple[str, ...]
    sources: str
    sha256: str

    def split(self) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """(train, held_out): a document is held out when its own sha256 is 0 modulo HELDOUT_MODULUS."""
        train, held_out = [], []
        for doc in self.documents:
            digest = int(hashlib.sha256(doc.encode()).hexdigest()[:8], 16)
            (held_out if digest % HELDOUT_MODULUS == 0 else train).append(doc)
        return tuple(train), tuple(held_out)

    def provenance(self) -> dict:
        return {"name": self.name, "sources": self.sources, "n_documents": len(self.documents),
                "n_chars": sum(map(len, self.documents)), "sha256": self.sha256,
                "heldout_rule": f"sha256(document)[:8] % {HELDOUT_MODULUS} == 0"}


@functools.lru_cache(maxsize=1)
def offline_corpus() -> Corpus:
    """``pydoc_data.topics`` plus every standard-library docstring of at least MIN_DOCSTRING_CHARS (via ``ast``).

    Cached per process (it takes seconds); ``offline_corpus.__wrapped__()`` rebuilds it."""
    from pydoc_data.topics import topics

    documents = [topics[key] for key in sorted(topics)]
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    for path in sorted(stdlib.rglob("*.py")):
        if SKIPPED_STDLIB_PARTS.intersection(path.relative_to(stdlib).parts):
            continue
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"))
        except (SyntaxError, UnicodeDecodeError, ValueError):
            continue  # a few stdlib files are deliberately invalid (test data, other encodings)
        for node in ast.walk(tree):
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                doc = ast.get_docstring(node)
                if doc and len(doc) >= MIN_DOCSTRING_CHARS:
                    documents.append(doc)
    digest = hashlib.sha256()
    for doc in documents:
        digest.update(hashlib.sha256(doc.encode()).digest())
    sources = f"pydoc_data.topics + docstrings under {stdlib} (Python {sys.version.split()[0]})"
    return Corpus("python-docs", tuple(documents), sources, digest.hexdigest())


def pack_tokens(tokenizer, documents, context_size: int = CONTEXT_SIZE) -> list[list[int]]:
    """Rows of ``context_size`` tokens: BOS, then the documents' tokens, consecutive documents separated by BOS.

    BOS is a special token: the runner (``exclude_special_tokens=True``) and the quality measurement both skip it.
    """
    bos = tokenizer.bos_token_id
    stream: list[int] = []
    for ids in tokenizer(list(documents), add_special_tokens=False)["input_ids"]:
        stream.extend(ids)
        stream.append(bos)
    width = context_size - 1
    return [[bos] + stream[i: i + width] for i in range(0, len(stream) - width + 1, width)]


# --------------------------------------------------------------------------------------------------- loading
def load_sae_from_disk(path: str | os.PathLike, device: str = "cpu"):
    """An SAE saved by SAELens (``cfg.json`` + ``sae_weights.safetensors``); never touches the network."""
    with dependency_deprecations():
        from sae_lens import SAE

    path = Path(path)
    if not (path / "cfg.json").is_file():
        raise FileNotFoundError(f"no SAELens SAE at {path} (cfg.json missing)")
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=SAELENS_LOAD_NOISE, category=UserWarning)
        return SAE.load_from_disk(str(path), device=device)


def load_sae_from_hub(release: str, sae_id: str, *, device: str = "cpu", offline: bool = False):
    """``SAE.from_pretrained(release, sae_id)``; ``ModelUnavailable`` (never a network attempt) when offline."""
    require_hub(f"SAE {release}/{sae_id}", offline)
    with dependency_deprecations():
        from sae_lens import SAE

    try:
        return SAE.from_pretrained(release, sae_id, device=device)
    except OSError as exc:  # connection refused / DNS failure / HF's offline errors are all OSErrors
        raise ModelUnavailable(f"SAE {release}/{sae_id}: model hub unreachable ({type(exc).__name__}: "
                               f"{str(exc).splitlines()[0] if str(exc) else ''})") from exc


# --------------------------------------------------------------------------------------------------- training
@dataclass(frozen=True)
class SAETrainingSpec:
    """Everything that decides an SAE trained here (with the model's identity and the corpus hash)."""

    hook_name: str
    d_sae: int
    k: int
    training_tokens: int
    seed: int = 0
    context_size: int = CONTEXT_SIZE
    # 200k tokens is a small budget: small batches give ~800 steps, and a dead-feature window far below SAELens'
    # default (1000 steps) lets TopK's auxiliary loss revive dead latents within the run. Chosen on cached
    # blocks.15 activations (40k tokens: batch 1024 / lr 5e-4 gave explained variance -0.32; batch 256 / lr 2e-3
    # 0.70; with a 30-step window 0.73 and half the dead latents).
    train_batch_size_tokens: int = 256
    lr: float = 2e-3
    dead_feature_window: int = 50
    store_batch_size_prompts: int = 8
    n_batches_in_buffer: int = 8

    def dirname(self, model_name: str) -> str:
        """Readable and unique: any change to the spec (or the trainer code's spec fields) is a new cache entry."""
        hook = self.hook_name.replace(".", "_")
        digest = hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:8]
        return f"{model_name}--{hook}--topk{self.k}-d{self.d_sae}-t{self.training_tokens}-s{self.seed}-{digest}"


def train_sae(model, model_name: str, spec: SAETrainingSpec, out_dir: str | os.PathLike, corpus: Corpus | None = None,
              processing: dict | None = None, quality_rows: int = 24):
    """Train a TopK SAE on ``model`` with SAELens' ``LanguageModelSAETrainingRunner``; save, reload, measure.

    The training rows are the corpus' training documents packed into ``context_size`` rows and shuffled with the
    seed; quality is measured on the first ``quality_rows`` rows of the held-out documents. ``processing`` (how the
    model's weights were processed, e.g. ``ModelProvenance.processing``) is saved as the SAE's
    ``model_from_pretrained_kwargs``: an SAE only fits a model processed the same way. Writes ``out_dir`` (SAELens
    files + ``mechclaim.json``) and returns the SAE reloaded with ``SAE.load_from_disk``.
    """
    import torch
    from datasets import Dataset
    with dependency_deprecations():
        from sae_lens import LanguageModelSAERunnerConfig, LanguageModelSAETrainingRunner, LoggingConfig
        from sae_lens.saes.topk_sae import TopKTrainingSAEConfig

    corpus = corpus or offline_corpus()
    out_dir = Path(out_dir)
    started = time.perf_counter()
    train_docs, held_docs = corpus.split()
    train_rows = pack_tokens(model.tokenizer, train_docs, spec.context_size)
    random.Random(f"mechclaim-sae:{spec.seed}").shuffle(train_rows)
    # Activations per row exclude the leading BOS and the separators; keep enough rows for the token budget.
    buffer_rows = spec.store_batch_size_prompts * spec.n_batches_in_buffer
    needed = spec.training_tokens // (spec.context_size - 2) + 4 * buffer_rows
    if len(train_rows) < needed:
        raise ValueError(f"corpus {corpus.name} has {len(train_rows)} training rows; {needed} are needed for "
                         f"{spec.training_tokens} training tokens")
    dataset = Dataset.from_dict({"tokens": train_rows[:needed]})
    d_in = model.cfg.d_model
    cfg = LanguageModelSAERunnerConfig(
        sae=TopKTrainingSAEConfig(d_in=d_in, d_sae=spec.d_sae, k=spec.k, dtype="float32", device="cpu"),
        model_name=model_name,
        model_class_name=type(model).__name__,
        model_from_pretrained_kwargs=dict(processing or {}),
        hook_name=spec.hook_name,
        dataset_path=f"mechclaim-offline:{corpus.name}@{corpus.sha256[:16]}",
        is_dataset_tokenized=True,
        streaming=False,
        context_size=spec.context_size,
        training_tokens=spec.training_tokens,
        train_batch_size_tokens=spec.train_batch_size_tokens,
        store_batch_size_prompts=spec.store_batch_size_prompts,
        n_batches_in_buffer=spec.n_batches_in_buffer,
        lr=spec.lr,
        dead_feature_window=spec.dead_feature_window,
        seed=spec.seed,
        device=str(model.cfg.device),
        act_store_device="cpu",
        prepend_bos=False,  # rows are packed with their BOS already
        exclude_special_tokens=True,
        logger=LoggingConfig(log_to_wandb=False),
        checkpoint_path=None,
        n_checkpoints=0,
        output_path=str(out_dir),
        verbose=False,
    )
    torch.manual_seed(spec.seed)  # the runner does not seed: SAE init and buffer shuffling use torch's global RNG
    with warnings.catch_warnings():
        for message in SAELENS_TRAINING_NOISE:
            warnings.filterwarnings("ignore", message=message, category=UserWarning)
        runner = LanguageModelSAETrainingRunner(cfg, override_dataset=dataset, override_model=model)
        with step(f"training a TopK SAE (d_sae {spec.d_sae}, k {spec.k}) on {spec.hook_name}, "
                  f"{spec.training_tokens} tokens"):
            runner.run()
    train_seconds = time.perf_counter() - started
    sae = load_sae_from_disk(out_dir, device=str(model.cfg.device))
    held_rows = pack_tokens(model.tokenizer, held_docs, spec.context_size)[:quality_rows]
    quality = sae_quality(model, sae, held_rows, spec.hook_name)
    provenance = {
        "model_name": model_name,
        "spec": asdict(spec),
        "corpus": corpus.provenance(),
        "n_training_rows_available": len(train_rows),
        "quality_heldout": quality.to_dict(),
        "quality_heldout_rows": len(held_rows),
        "train_seconds": round(train_seconds, 1),
        "trainer": "sae_lens.LanguageModelSAETrainingRunner",
        "versions": library_versions(),
    }
    (out_dir / PROVENANCE_FILE).write_text(json.dumps(provenance, indent=2, sort_keys=True) + "\n")
    return sae


def cached_sae_dir(cache_dir: str | os.PathLike, dirname: str, build) -> Path:
    """``cache_dir/saes/dirname``, built by ``build(tmp_dir)`` once, under a file lock, atomically (temp + rename)."""
    from filelock import FileLock

    root = Path(cache_dir) / "saes"
    root.mkdir(parents=True, exist_ok=True)
    target = root / dirname
    if (target / COMPLETE_MARKER).is_file():
        return target
    with FileLock(str(root / f"{dirname}.lock")):
        if (target / COMPLETE_MARKER).is_file():
            return target
        tmp = root / f"{dirname}.tmp-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        try:
            build(tmp)
            (tmp / COMPLETE_MARKER).write_text(dirname + "\n")
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        shutil.rmtree(target, ignore_errors=True)
        os.replace(tmp, target)
    return target


def smollm2_sae_spec(seed: int = 0) -> SAETrainingSpec:
    return SAETrainingSpec(SMOLLM2_SAE_HOOK, SMOLLM2_SAE_D_SAE, SMOLLM2_SAE_K, SMOLLM2_SAE_TOKENS, seed=seed)


# SAEs shipped with the package: the exact SmolLM2 SAE the committed claim ledger was recorded with (11 MB),
# so claims do not depend on a CPU-hours-scale rebuild matching it bit for bit. `build-smollm2` reproduces it.
SHIPPED_SAES = Path(__file__).parent / "data" / "saes"


def shipped_sae_dir(dirname: str) -> Path | None:
    folder = SHIPPED_SAES / dirname
    return folder if (folder / COMPLETE_MARKER).is_file() else None


def find_smollm2_sae(cache_dir: str | os.PathLike, seed: int = 0) -> Path | None:
    """The SmolLM2 SAE's folder if it is shipped or already built in the cache; None otherwise."""
    from .models import SMOLLM2_NAME

    dirname = smollm2_sae_spec(seed).dirname(SMOLLM2_NAME)
    cached = Path(cache_dir) / "saes" / dirname
    return shipped_sae_dir(dirname) or (cached if (cached / COMPLETE_MARKER).is_file() else None)


def smollm2_sae_dir(cache_dir: str | os.PathLike, seed: int = 0, model=None, use_shipped: bool = True) -> Path:
    """The real SmolLM2 SAE's folder: the shipped copy when there is one (``use_shipped``), else the cache's,
    trained on first use (tens of CPU minutes) and then reused."""
    from .models import COMPATIBILITY_PROCESSING, SMOLLM2_NAME, load_smollm2

    spec = smollm2_sae_spec(seed)
    if use_shipped and (shipped := shipped_sae_dir(spec.dirname(SMOLLM2_NAME))) is not None:
        return shipped

    def build(tmp: Path) -> None:
        train_sae(model if model is not None else load_smollm2(cache_dir), SMOLLM2_NAME, spec, tmp,
                  processing=COMPATIBILITY_PROCESSING)

    return cached_sae_dir(cache_dir, spec.dirname(SMOLLM2_NAME), build)


def load_smollm2_sae(cache_dir: str | os.PathLike, seed: int = 0, model=None, device: str = "cpu"):
    return load_sae_from_disk(smollm2_sae_dir(cache_dir, seed, model), device=device)


def sae_provenance(path: str | os.PathLike) -> dict:
    return json.loads((Path(path) / PROVENANCE_FILE).read_text())


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pytest_mechclaim.saes", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    build = sub.add_parser("build-smollm2", help="train (or find cached) the SmolLM2 blocks.15 TopK SAE")
    build.add_argument("--cache-dir", default=".mechclaim/cache")
    build.add_argument("--seed", type=int, default=0)
    build.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own choice)")
    args = parser.parse_args(argv)
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    started = time.perf_counter()
    # Always train into the cache (reproducing the shipped SAE), never just point at the shipped copy.
    path = smollm2_sae_dir(args.cache_dir, args.seed, use_shipped=False)
    info = sae_provenance(path)
    print(f"SmolLM2 SAE: {path} ({time.perf_counter() - started:.1f} s; trained in {info['train_seconds']} s)")
    print(json.dumps(info["quality_heldout"], indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
