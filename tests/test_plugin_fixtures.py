"""The plugin's own fixtures (entry point ``mechclaim-fixtures``), seen from an empty project: only the installed
plugin, none of this repository's files (pytester projects do not see the repo's conftest.py)."""

from __future__ import annotations

import ast
import re
import textwrap
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import torch
import transformer_lens  # noqa: F401  (imported here: inner sessions drop modules they import, and datasets,
#                          which TL imports, cannot register its pyarrow types twice in one process)

from pytest_mechclaim.fixtures.runtime import spread_device

pytest_plugins = ["pytester"]

REPO = Path(__file__).resolve().parents[1]
# The inner sessions run in this process, where pytest_mechclaim is already imported (and so not rewritten).
INNER_ARGS = ("-p", "no:cacheprovider", "-W", "ignore::pytest.PytestAssertRewriteWarning")


def run(pytester: pytest.Pytester, *args: str):
    return pytester.runpytest(*args, *INNER_ARGS)


# ------------------------------------------------------------------------------------- fixtures, markers, README
PLUGIN_FIXTURES = {
    "mechclaim_runtime": "Under pytest-xdist with k CUDA devices",
    "mechclaim_models": "groundtruth:induction",
    "smollm2": "SmolLM2-135M-Instruct",
    "groundtruth_model": "hand-set induction model",
    "mechclaim_saes": "mechclaim_saes(release, sae_id)",
    "smollm2_sae": "blocks.15.hook_resid_post",
    "smollm2_sae_if_built": "naming the command that builds it",
    "groundtruth_sae": "hand-set SAE",
    "mechclaim_induction_tasks": "tokenized",
    "discovery_tasks": "discovery tasks",
    "heldout_tasks": "held-out tasks",
    "smollm2_tokenizer": "SmolLM2 tokenizer",
    "negation_bank": "negation families",
}


def test_fixtures_are_listed_with_their_docstrings_in_an_empty_project(pytester):
    out = run(pytester, "--fixtures", "-v").stdout.str()
    for name, doc in PLUGIN_FIXTURES.items():
        assert re.search(rf"^{name} \[session scope\] -- .*pytest_mechclaim/fixtures/", out, re.M), name
        assert doc in out, (name, doc)


def test_without_the_fixtures_entry_point_an_empty_project_has_none_of_them(pytester):
    out = run(pytester, "--fixtures", "-p", "no:mechclaim-fixtures").stdout.str()
    assert "mechclaim " in out or "mechclaim --" in out  # the claim handle still comes from the mechclaim plugin
    for name in PLUGIN_FIXTURES:
        assert not re.search(rf"^{name} \[", out, re.M), name


SLOW_TEST = "import pytest\n\n@pytest.mark.slow\ndef test_slow():\n    pass\n"


def test_slow_marker_is_registered_by_the_plugin(pytester):
    pytester.makepyfile(test_slow=SLOW_TEST)
    run(pytester, "--strict-markers").assert_outcomes(passed=1)
    assert "@pytest.mark.slow:" in run(pytester, "--markers").stdout.str()


def test_slow_marker_is_unknown_without_the_fixtures_plugin(pytester):
    pytester.makepyfile(test_slow=SLOW_TEST)
    # A subprocess: in-process, pytest.mark caches every marker name this outer session registered.
    result = pytester.runpytest_subprocess("--strict-markers", "-p", "no:mechclaim-fixtures", "-p", "no:cacheprovider")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*'slow' not found in `markers`*"])


def readme_tour() -> str:
    text = (REPO / "README.md").read_text()
    return re.search(r"```python\n(.*?)```", text, re.S).group(1)


def gate_properties(junit: Path) -> dict[str, str]:
    case = ET.parse(junit).getroot().find(".//testcase")
    return {p.get("name"): p.get("value") for p in case.iter("property")}


def run_tour(pytester, tour: str):
    pytester.makepyfile(test_tour=tour)
    pytester.makeini("[pytest]\nstrict = true\njunit_family = xunit1\n")
    result = run(pytester, "--junitxml=junit.xml")
    return result, gate_properties(pytester.path / "junit.xml")


def assert_real_induction_evidence(props: dict[str, str]) -> None:
    # Not a pass over nothing: the true head moves its target far more than the matched controls do, in every
    # family and control suite, on all three held-out seeds (the hand-set model's logit gaps are ~10).
    for gate in ("specificity_gap", "family_minimum", "multi_control_minimum", "seed_replication"):
        assert props[f"mechclaim.gate.{gate}.passed"] == "True", gate
    assert float(props["mechclaim.gate.specificity_gap.value"]) > 5.0
    assert float(props["mechclaim.gate.family_minimum.value"]) > 5.0
    assert float(props["mechclaim.gate.multi_control_minimum.value"]) > 5.0
    assert float(props["mechclaim.gate.seed_replication.value"]) == 3


def test_the_readme_tour_verbatim_is_a_candidate_on_real_evidence(pytester):
    tour = readme_tour()
    assert "groundtruth_model" in tour and "heldout_tasks" in tour
    result, props = run_tour(pytester, tour)
    assert "not found" not in result.stdout.str()
    result.assert_outcomes(passed=1)
    assert props["mechclaim.verdict"] == "candidate"
    assert_real_induction_evidence(props)
    assert props["mechclaim.gate.unit_controls.passed"] == "True"


def test_the_readme_tour_on_the_decoy_head_is_not_a_pass(pytester):
    # The same block claiming the decoy L1H1 (same attention, no effect), compared with the other heads.
    decoy = (readme_tour().replace('units=["L1H0"]', 'units=["L1H1"]')
             .replace('heldout_tasks, ["L1H0"]', 'heldout_tasks, ["L1H1"]')
             .replace('["L0H0", "L0H1", "L1H1"]', '["L0H0", "L0H1", "L1H0"]'))
    assert decoy.count("L1H1") == 2
    pytester.makepyfile(test_tour=decoy)
    result = run(pytester)
    result.assert_outcomes(failed=1)
    assert "verdict FALSIFIED (claimed candidate)" in result.stdout.str()


# --------------------------------------------------------------------------------------------------- runtime
RUNTIME_PROBE = textwrap.dedent('''
    import torch

    def test_runtime(mechclaim_runtime, pytestconfig):
        assert mechclaim_runtime.threads == {threads}
        assert torch.get_num_threads() == {threads}
        assert mechclaim_runtime.device == "{device}"
        assert mechclaim_runtime.cache_dir == pytestconfig.rootpath / "{cache}"
        assert mechclaim_runtime.offline is {offline}
''')


@pytest.fixture
def restore_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize(("args", "ini", "threads", "cache", "offline"), [
    (["--mechclaim-threads", "1", "--mechclaim-cache-dir", "c1", "--mechclaim-device", "cpu"], "", 1, "c1", False),
    (["--mechclaim-offline"], "mechclaim_threads = 1\nmechclaim_device = cpu\nmechclaim_cache_dir = c2\n",
     1, "c2", True),
])
def test_runtime_reads_every_option_and_ini_key_in_an_empty_project(pytester, restore_threads, args, ini, threads,
                                                                   cache, offline):
    pytester.makeini("[pytest]\n" + ini)
    pytester.makepyfile(test_runtime=RUNTIME_PROBE.format(threads=threads, cache=cache, offline=offline,
                                                          device="cpu"))
    run(pytester, *args).assert_outcomes(passed=1)


def no_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)


@pytest.mark.parametrize(("args", "ini", "message"), [
    (["--mechclaim-device", "cuda"], "", "*--mechclaim-device asks for device 'cuda', but torch.cuda.is_available() "
                                         "is False here*use --mechclaim-device cpu or auto*"),
    ([], "mechclaim_device = cuda:0\n", "*the mechclaim_device ini key asks for device 'cuda:0'*"),
    ([], "mechclaim_device = tpu\n", "*the mechclaim_device ini key: unknown device 'tpu'; use auto, cpu, cuda*"),
    (["--mechclaim-threads", "-1"], "", "*--mechclaim-threads / mechclaim_threads must be >= 0, got -1*"),
    ([], "mechclaim_threads = many\n", "*the mechclaim_threads ini key must be an integer >= 0*"),
    (["--mechclaim-cache-dir", "afile"], "", "*afile exists and is not a directory*"),
])
def test_an_unusable_runtime_option_is_a_usage_error_at_startup(pytester, monkeypatch, args, ini, message):
    no_cuda(monkeypatch)
    pytester.makeini("[pytest]\n" + ini)
    pytester.makefile("", afile="not a folder")
    pytester.makepyfile(test_never_runs="def test_never_runs():\n    raise AssertionError('ran')\n")
    result = run(pytester, *args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([message])
    assert "ran" not in result.stdout.str() and "Traceback" not in result.stderr.str()


def fake_cuda(monkeypatch, count: int):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: count)


def test_a_cuda_index_beyond_the_devices_is_a_usage_error(pytester, monkeypatch):
    fake_cuda(monkeypatch, 2)
    pytester.makeini("[pytest]\nmechclaim_device = cuda:2\n")
    result = run(pytester)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*asks for device 'cuda:2', but this machine has 2 CUDA device(s): cuda:0 .. cuda:1*"])


@pytest.mark.parametrize(("device", "worker", "expected"), [
    ("cuda", "gw0", "cuda:0"), ("cuda", "gw3", "cuda:1"), ("auto", "gw5", "cuda:1"),
    ("cuda", None, "cuda"),        # no xdist: the default device
    ("cuda:1", "gw0", "cuda:1"),   # pinned by the user: every worker on it
    ("cpu", "gw3", "cpu"),
])
def test_xdist_workers_spread_over_the_cuda_devices(pytester, monkeypatch, restore_threads, device, worker, expected):
    fake_cuda(monkeypatch, 2)
    if worker is None:
        monkeypatch.delenv("PYTEST_XDIST_WORKER", raising=False)
    else:
        monkeypatch.setenv("PYTEST_XDIST_WORKER", worker)
    pytester.makeini(f"[pytest]\nmechclaim_device = {device}\nmechclaim_threads = 1\n")
    pytester.makepyfile(test_runtime=RUNTIME_PROBE.format(threads=1, cache=".mechclaim/cache", offline=False,
                                                          device=expected))
    run(pytester).assert_outcomes(passed=1)


XDIST_PROBE = textwrap.dedent('''
    import os
    import torch

    def test_worker_runtime(mechclaim_runtime):
        worker = os.environ["PYTEST_XDIST_WORKER"]
        assert worker in ("gw0", "gw1")
        cuda = torch.cuda.is_available()  # on a CUDA machine: the worker's own device
        assert mechclaim_runtime.device == (f"cuda:{int(worker[2:]) % torch.cuda.device_count()}" if cuda else "cpu")
        assert mechclaim_runtime.threads == max(1, (os.cpu_count() or 1) // 2)
''')


def test_xdist_workers_get_their_runtime_from_the_plugin(pytester):
    pytester.makepyfile(test_xdist=XDIST_PROBE)
    result = pytester.runpytest_subprocess("-n", "2", "--mechclaim-device", "auto", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)


def test_the_fixtures_plugin_without_the_mechclaim_plugin_is_a_usage_error(pytester):
    result = run(pytester, "-p", "no:mechclaim")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*the mechclaim-fixtures plugin reads the mechclaim plugin's options*"
                                 "-p no:mechclaim-fixtures*"])


def test_spread_device_rule():
    assert [spread_device("cuda", f"gw{i}", 3) for i in range(5)] == ["cuda:0", "cuda:1", "cuda:2", "cuda:0", "cuda:1"]
    assert spread_device("cuda", "master", 3) == spread_device("cuda", None, 3) == "cuda"
    assert spread_device("cuda", "gw4", 0) == "cuda"  # nothing to spread over: the startup check already refused it


# ------------------------------------------------------------------------------------------------ models, SAEs
MODELS_PROBE = textwrap.dedent('''
    import pytest

    def test_groundtruth(mechclaim_models, groundtruth_model):
        model = mechclaim_models("groundtruth:induction")
        assert model is mechclaim_models("groundtruth:induction")  # loaded once per session
        assert model.mechclaim_provenance.ref == "groundtruth:induction" and model.cfg.d_vocab == 32
        assert groundtruth_model.cfg.n_layers == 2 and groundtruth_model.cfg.device == "cpu"

    def test_hub_model_offline(mechclaim_models):
        mechclaim_models("gpt2-small")

    def test_unknown_model_is_an_error_not_a_skip(mechclaim_models):
        with pytest.raises(ValueError, match="gpt-17-nonexistent not found"):
            mechclaim_models("gpt-17-nonexistent")
''')


def test_model_loader_in_an_empty_project(pytester):
    pytester.makepyfile(test_models=MODELS_PROBE)
    result = run(pytester, "--mechclaim-offline", "-rs")
    result.assert_outcomes(passed=2, skipped=1)
    result.stdout.fnmatch_lines(["*SKIPPED*model 'gpt2-small' (gpt2) needs the model hub: offline mode*"])


SAES_PROBE = textwrap.dedent('''
    import pytest, torch
    from pytest_mechclaim.fixtures.saes import SAERefError

    def test_hand_set_and_disk(mechclaim_saes, groundtruth_sae, tmp_path):
        assert torch.equal(mechclaim_saes("groundtruth:induction").W_dec, groundtruth_sae.W_dec)
        groundtruth_sae.save_model(tmp_path / "gt-sae")  # a folder saved by SAELens
        assert torch.equal(mechclaim_saes(tmp_path / "gt-sae").W_dec, groundtruth_sae.W_dec)

    def test_shipped_smollm2_sae(mechclaim_saes, smollm2_sae_if_built):
        sae = mechclaim_saes("smollm2")
        assert (sae.cfg.d_in, sae.cfg.d_sae) == (576, 2304)
        assert torch.equal(sae.W_dec, smollm2_sae_if_built.W_dec)

    def test_hub_sae_offline(mechclaim_saes):
        mechclaim_saes("pythia-70m-deduped-res-sm", "blocks.2.hook_resid_post")

    def test_missing_folder_is_an_error(mechclaim_saes, tmp_path):
        with pytest.raises(SAERefError, match="unknown SAE .*missing.*cfg.json.*'smollm2'.*release, sae_id"):
            mechclaim_saes(tmp_path / "missing")
''')


def test_sae_loader_in_an_empty_project(pytester):
    pytester.makepyfile(test_saes=SAES_PROBE)
    result = run(pytester, "--mechclaim-offline", "--mechclaim-device", "cpu", "-rs")
    result.assert_outcomes(passed=3, skipped=1)
    result.stdout.fnmatch_lines(["*SKIPPED*pythia-70m-deduped-res-sm/blocks.2.hook_resid_post*offline*"])


# -------------------------------------------------------------------------------------------------- task banks
BANKS_PROBE = textwrap.dedent('''
    import pytest
    from pytest_mechclaim.banks.induction import BankError

    def test_groundtruth_stages(mechclaim_induction_tasks, groundtruth_model, heldout_tasks, discovery_tasks):
        build = mechclaim_induction_tasks(groundtruth_model, "heldout")
        assert build is mechclaim_induction_tasks(groundtruth_model, "heldout")
        assert [t.pair for t in build.tasks] == [t.pair for t in heldout_tasks] and build.excluded == []
        held, disc = {t.pair.clean for t in heldout_tasks}, {t.pair.clean for t in discovery_tasks}
        assert len(held) == 48 and len(disc) == 48 and not held & disc
        assert {t.pair.family for t in heldout_tasks} == {"repeat_mid", "repeat_tail"}
        assert {t.pair.family for t in discovery_tasks} == {"repeat_short", "repeat_long"}
        assert {t.pair.seed for t in heldout_tasks} == {10, 11, 12}
        assert {s for t in heldout_tasks for s, _ in t.controls} == {"no_repeat", "distractor"}

    def test_unknown_stage(mechclaim_induction_tasks, groundtruth_model):
        with pytest.raises(BankError, match="no ground-truth stage 'characterization'"):
            mechclaim_induction_tasks(groundtruth_model, "characterization")

    def test_negation(negation_bank):
        assert len(negation_bank) == 240
        assert {t.family for t in negation_bank} == {"sentiment_negation", "property_negation", "state_negation"}
''')


def test_task_bank_fixtures_in_an_empty_project(pytester):
    pytester.makepyfile(test_banks=BANKS_PROBE)
    run(pytester).assert_outcomes(passed=3)


def test_induction_tasks_need_the_models_own_tokenizer():
    from types import SimpleNamespace

    from pytest_mechclaim.banks.induction import BankError
    from pytest_mechclaim.fixtures.banks import induction_tasks_for

    with pytest.raises(TypeError, match="has no tokenizer"):
        induction_tasks_for(SimpleNamespace(tokenizer=None), "heldout")
    with pytest.raises(BankError, match="unknown stage 'replication'"):
        induction_tasks_for(SimpleNamespace(tokenizer=None), "replication")


def fixture_names(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    return {node.name for node in ast.walk(tree) if isinstance(node, ast.FunctionDef)
            and any("fixture" in ast.unparse(d) for d in node.decorator_list)}


def test_the_repository_does_not_register_a_plugin_fixture_again():
    plugin = set().union(*(fixture_names(p) for p in (REPO / "pytest_mechclaim" / "fixtures").glob("*.py")))
    assert set(PLUGIN_FIXTURES) <= plugin
    for path in [*(REPO / "fixtures").glob("*.py"), REPO / "conftest.py", REPO / "claims" / "conftest.py"]:
        assert not fixture_names(path) & plugin, path


# ------------------------------------------------------------------------------------------------ text prompts
@pytest.fixture(scope="module")
def word_tokenizer():
    """A word-level HF tokenizer for the hand-set model: "t1" .. "t31" are tokens 1 .. 31, BOS "<bos>" is 0."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<bos>": 0, **{f"t{i}": i for i in range(1, 32)}, "<unk>": 32}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, bos_token="<bos>", unk_token="<unk>")


def as_text(ids) -> str:
    return " ".join(f"t{i}" for i in ids)


def text_version(task, tokenizer):
    """The same hand-set task, written as text."""
    from pytest_mechclaim.prompts import text_task

    def spec(p):
        return as_text(p.clean[1:]), as_text(p.corrupt[1:]), f"t{p.target}", f"t{p.foil}"

    return text_task(tokenizer, task.pair.prompt_id, task.pair.family, *spec(task.pair), seed=task.pair.seed,
                     controls={suite: spec(c) for suite, c in task.controls})


def test_text_tasks_tokenize_to_the_same_ids_and_carry_the_same_evidence(word_tokenizer, groundtruth_model):
    from pytest_mechclaim.engine import head_evidence
    from pytest_mechclaim.fixtures.banks import groundtruth_tasks

    tasks = groundtruth_tasks("heldout", n_per_family=2)
    texts = [text_version(t, word_tokenizer) for t in tasks]
    for task, text in zip(tasks, texts):
        assert (text.pair.clean, text.pair.corrupt, text.pair.target, text.pair.foil) == \
            (task.pair.clean, task.pair.corrupt, task.pair.target, task.pair.foil)
        assert [(s, c.clean, c.target) for s, c in text.controls] == [(s, c.clean, c.target) for s, c in task.controls]
        assert text.pair.text == as_text(task.pair.clean[1:])
    from_text, from_ids = (head_evidence(groundtruth_model, ts, ["L1H0"]) for ts in (texts, tasks))
    assert [(r.prompt_id, r.control_suite, r.target_delta, r.control_delta) for r in from_text] == \
        [(r.prompt_id, r.control_suite, r.target_delta, r.control_delta) for r in from_ids]
    gaps = [abs(r.target_delta) - abs(r.control_delta) for r in from_text if r.status == "ok"]
    assert len(gaps) == len(from_text) > 0 and sum(gaps) / len(gaps) > 5.0  # the true head, on text tasks


@pytest.mark.parametrize(("target", "foil", "message"), [
    ("t5 t6", "t7", "p1: target 't5 t6' is 2 tokens ['t5', 't6'] (ids [5, 6]) for this tokenizer; a target must "
                    "be exactly one token"),
    ("t5", "", "p1: foil '' is empty (no tokens) for this tokenizer; a foil must be exactly one token"),
    ("t5", "Paris", "p1: foil 'Paris' is the tokenizer's unknown token '<unk>' (id 32)"),
    ("t5", 7, "p1: foil must be a string, got int 7"),
    ("t5", "t5", "p1: target and foil are the same token (5)"),
])
def test_a_target_or_foil_that_is_not_one_token_is_an_error_naming_it(word_tokenizer, target, foil, message):
    from pytest_mechclaim.prompts import TextPromptError, text_pair
    from pytest_mechclaim.tasks import TaskError

    with pytest.raises(TaskError, match=re.escape(message)) as info:
        text_pair(word_tokenizer, "p1", "fam", "t1 t2 t3", "t1 t2 t4", target, foil)
    assert info.type is (TaskError if foil == target else TextPromptError)


def test_text_task_rejects_empty_prompts_and_malformed_controls(word_tokenizer):
    from pytest_mechclaim.prompts import TextPromptError, text_task

    with pytest.raises(TextPromptError, match="p1: the corrupt prompt must be non-empty text"):
        text_task(word_tokenizer, "p1", "fam", "t1 t2", "  ", "t5", "t6")
    with pytest.raises(TextPromptError, match=r"p1: control 'lexical' must be \(clean, corrupt, target, foil\)"):
        text_task(word_tokenizer, "p1", "fam", "t1 t2", "t1 t3", "t5", "t6", controls={"lexical": ("t1", "t2")})
    with pytest.raises(TextPromptError, match="p1-lexical: target 't8 t9' is 2 tokens"):
        text_task(word_tokenizer, "p1", "fam", "t1 t2", "t1 t3", "t5", "t6",
                  controls={"lexical": ("t1 t4", "t1 t9", "t8 t9", "t6")})


def test_text_prompts_and_induction_tasks_on_the_smollm2_tokenizer(smollm2_tokenizer, mechclaim_induction_tasks):
    from pytest_mechclaim.prompts import TextPromptError, text_pair

    pair = text_pair(smollm2_tokenizer, "fr", "capitals", "The capital of France is", "The capital of Italy is",
                     " Paris", " Rome")
    assert pair.clean[0] == smollm2_tokenizer.bos_id and pair.target != pair.foil
    with pytest.raises(TextPromptError, match=r"target ' Parisians of France' is \d tokens \[' Paris'"):
        text_pair(smollm2_tokenizer, "fr", "capitals", "The capital of France is", "The capital of Italy is",
                  " Parisians of France", " Rome")
    build = mechclaim_induction_tasks(smollm2_tokenizer, "heldout")
    assert build.tasks and {t.pair.seed for t in build.tasks} == {10, 11, 12}
    assert build is mechclaim_induction_tasks(smollm2_tokenizer, "heldout")
