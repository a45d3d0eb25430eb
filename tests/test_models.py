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


# ------------------------------------------------------------------------------------------ SmolLM2, offline
# Numerically robust facts about the offline SmolLM2-135M-Instruct (fp32 dequantized from the Q4_1 GGUF), not exact
# greedy strings: a two-token greedy completion ended in a near-tie (' Paris.' vs ' Paris-') that flipped with a
# transformers release. The first token is decided by a wide log-prob margin (measured: ' Paris' -0.29 vs ' Mon'
# -4.06; ' cold' -1.33 vs '.' -3.22); a wrong conversion, tokenizer or weight processing breaks it.
NEXT_TOKEN = {
    "The capital of France is": " Paris",
    "The opposite of hot is": " cold",
}
MIN_LOGPROB_MARGIN = 1.0


@pytest.mark.parametrize("prompt", sorted(NEXT_TOKEN))
def test_smollm2_next_token_wins_by_a_wide_margin(smollm2, prompt):
    with torch.no_grad():
        logprobs = smollm2(smollm2.to_tokens(prompt)).log_softmax(-1)[0, -1]
    top = logprobs.topk(2)
    assert smollm2.tokenizer.decode([int(top.indices[0])]) == NEXT_TOKEN[prompt]
    assert float(top.values[0] - top.values[1]) > MIN_LOGPROB_MARGIN


def test_smollm2_converted_weights_match_the_recorded_hash(smollm2):
    """The converted fp32 weights are byte-identical to those the committed ledger was recorded with: a new
    transformers/gguf dequantization or conversion path would move the real model's numbers under the ledger."""
    assert smollm2.mechclaim_provenance.weights_sha256 == models.SMOLLM2_WEIGHTS_SHA256


def test_smollm2_log_probs_match_the_hf_model(smollm2):
    """TransformerLens' bridge and the plain HF model agree on log-probs (measured max |diff| 4.2e-5)."""
    from transformers import AutoModelForCausalLM

    hf = AutoModelForCausalLM.from_pretrained(smollm2.mechclaim_provenance.source, dtype=torch.float32)
    tokens = smollm2.to_tokens(["The capital of France is Paris, and the capital of Italy is Rome."])
    assert int(tokens[0, 0]) == smollm2.tokenizer.bos_token_id
    with torch.no_grad():
        ours, theirs = smollm2(tokens).log_softmax(-1), hf(tokens).logits.log_softmax(-1)
    assert float((ours - theirs).abs().max()) < 2e-4


def test_smollm2_has_the_induction_signature(smollm2):
    # BOS + 20 random tokens + the same 20 again: the second copy is predictable only by induction.
    g = torch.Generator().manual_seed(0)
    r = torch.randint(1000, 10000, (4, 20), generator=g)
    tokens = torch.cat([torch.full((4, 1), smollm2.tokenizer.bos_token_id), r, r], dim=1)
    with torch.no_grad():
        loss = smollm2(tokens, return_type="loss", loss_per_token=True)
    first, second = loss[:, :20].mean().item(), loss[:, 20:].mean().item()
    print(f"induction signature: loss first copy {first:.2f}, second copy {second:.2f}")  # measured 13.57 -> 3.89
    assert first > 10.0
    assert second < 6.0


def test_smollm2_provenance(smollm2):
    prov = smollm2.mechclaim_provenance
    assert prov.ref == "smollm2-135m-instruct" and prov.name == "smollm2-135m-instruct"
    assert prov.tl_class == "TransformerBridge"
    assert prov.processing["compatibility_mode"] and prov.processing["fold_ln"]
    assert prov.dtype == "float32"
    assert prov.device.split(":")[0] == next(smollm2.parameters()).device.type
    assert len(prov.weights_sha256) == 64 and int(prov.weights_sha256, 16) >= 0
    assert prov.versions["transformer-lens"].startswith("3.9") and prov.versions["sae-lens"]
    assert "SmolLM2-135M-Instruct.Q4_1.gguf" in prov.weights_hashed


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
