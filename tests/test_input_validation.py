"""Fail-closed input validation: engine and SAE-check inputs (token ids, context, positions, identical prompts) and
report paths (distinct, bounded directories; quoted rerun commands; escaped Markdown). Claim markers:
tests/test_marker_validation.py. Every rule has a case where it bites and one where it passes."""

from __future__ import annotations

import dataclasses
import re
import shlex

import pytest
import torch

from pytest_mechclaim import report
from pytest_mechclaim.engine import EngineError, head_evidence, resid_evidence, sae_evidence
from pytest_mechclaim.evidence import EvidenceRow
from pytest_mechclaim.gates import specificity_gap
from pytest_mechclaim.groundtruth import D_VOCAB, N_CTX, build_induction_model, build_induction_sae, induction_tasks
from pytest_mechclaim.runs import MAX_DIR_NAME, claim_dir_name, write_claim_test
from pytest_mechclaim.sae_compat import check_sae_compatibility
from pytest_mechclaim.spec import parse_claim_marker
from pytest_mechclaim.status import Status
from pytest_mechclaim.tasks import PromptPair, Task, TaskError
from pytest_mechclaim.verdict import decide

pytest_plugins = ["pytester"]


# ------------------------------------------------------------------------------------------------------ engine
@pytest.fixture(scope="module")
def gt_model():
    return build_induction_model()


@pytest.fixture(scope="module")
def gt_tasks():
    return induction_tasks(0, n_per_family=2)


class ForwardCounter:
    """Counts embedding calls: any forward pass of the model goes through ``embed`` first."""

    def __init__(self, model):
        self.calls = 0
        self.handle = model.embed.register_forward_pre_hook(self._count)

    def _count(self, module, args):
        self.calls += 1

    def close(self):
        self.handle.remove()


def with_pair(task: Task, **changes) -> Task:
    return Task(dataclasses.replace(task.pair, **changes), task.controls)


@pytest.mark.parametrize("bad_id", [-1, D_VOCAB])
def test_token_ids_outside_the_vocabulary_are_refused_before_any_forward_pass(gt_model, gt_tasks, bad_id):
    pair = gt_tasks[0].pair
    clean = (pair.clean[0], bad_id) + pair.clean[2:]
    counter = ForwardCounter(gt_model)
    try:
        with pytest.raises(EngineError) as err:
            head_evidence(gt_model, [with_pair(gt_tasks[0], clean=clean)] + gt_tasks[1:], ["L1H0"], path="reference")
        assert counter.calls == 0
    finally:
        counter.close()
    message = str(err.value)
    assert f"prompt {pair.prompt_id!r} (clean): token id(s) {bad_id} at index 1" in message
    assert f"outside the model's vocabulary [0, {D_VOCAB})" in message


def test_the_largest_vocabulary_id_is_accepted(gt_model, gt_tasks):
    pair = gt_tasks[0].pair
    clean = (pair.clean[0], D_VOCAB - 1) + pair.clean[2:]
    rows = head_evidence(gt_model, [with_pair(gt_tasks[0], clean=clean)], ["L1H0"], ("zero",))
    assert len(rows) == 2 and all(r.ok for r in rows)  # two control suites


@pytest.mark.parametrize("field, value, shown", [("target", D_VOCAB, "target token 32"),
                                                 ("foil", -3, "foil token -3"),
                                                 ("alt_targets", (40,), "alt_target token 40")])
def test_scored_tokens_outside_the_output_vocabulary_are_refused(gt_model, gt_tasks, field, value, shown):
    with pytest.raises(EngineError, match=rf"{shown} outside the model's output vocabulary \[0, {D_VOCAB}\)"):
        resid_evidence(gt_model, [with_pair(gt_tasks[0], **{field: value})], [0])


def test_a_control_prompt_is_checked_as_well(gt_model, gt_tasks):
    suite, control = gt_tasks[0].controls[0]
    bad = dataclasses.replace(control, corrupt=control.corrupt[:-1] + (-5,))
    task = Task(gt_tasks[0].pair, ((suite, bad),) + gt_tasks[0].controls[1:])
    with pytest.raises(EngineError, match=rf"prompt '{control.prompt_id}' \(corrupt\): token id\(s\) -5 at index "
                                          rf"{len(control.corrupt) - 1}"):
        head_evidence(gt_model, [task], ["L1H0"])


def test_a_prompt_longer_than_the_context_is_refused_and_one_that_fits_runs(gt_model):
    long = PromptPair("long", "f", [1] * (N_CTX + 1), [2] * (N_CTX + 1), 3, 4)
    with pytest.raises(EngineError, match=rf"prompt 'long' \(clean\) has {N_CTX + 1} tokens; the model's context "
                                          rf"holds at most n_ctx={N_CTX}"):
        head_evidence(gt_model, [Task(long)], ["L1H0"], ("zero",))
    fits = PromptPair("fits", "f", [1] * N_CTX, [2] * N_CTX, 3, 4)
    rows = head_evidence(gt_model, [Task(fits)], ["L1H0"], ("zero",))
    assert len(rows) == 1 and rows[0].ok


def test_sae_evidence_checks_its_tasks_too(gt_model, gt_tasks):
    with pytest.raises(EngineError, match=r"token id\(s\) 99 at index 0"):
        sae_evidence(gt_model, [with_pair(gt_tasks[0], corrupt=(99,) + gt_tasks[0].pair.corrupt[1:])],
                     build_induction_sae(), {"s": [1]})


@pytest.mark.parametrize("positions, message", [
    ((("previous_occurrence", 7),), r"position 'previous_occurrence' = 7 is outside the prompt: allowed \[0, 7\)"),
    ((("previous_occurrence", -1),), r"= -1 is outside the prompt"),
    ((("final", 2),), "'final' is reserved"),
    ((("x", 1), ("x", 2)), "appears twice"),
])
def test_labelled_positions_must_lie_inside_the_prompt(positions, message):
    with pytest.raises(TaskError, match=message):
        PromptPair("p", "f", [0, 1, 2, 3, 1, 2, 3], [0, 1, 2, 3, 5, 6, 7], 4, 2, positions=positions)
    last = PromptPair("p", "f", [0, 1, 2, 3, 1, 2, 3], [0, 1, 2, 3, 5, 6, 7], 4, 2,
                      positions=(("previous_occurrence", 6),))
    assert last.position("previous_occurrence") == 6


def test_non_integer_token_ids_are_refused_not_truncated():
    with pytest.raises(TaskError, match="clean must be integer token ids"):
        PromptPair("p", "f", [0, 1.7, 2], [0, 1, 3], 4, 5)
    assert PromptPair("p", "f", torch.tensor([0, 1, 2]), [0, 1, 3], torch.tensor(4), 5).clean == (0, 1, 2)


def test_identical_prompts_give_invalid_rows_and_a_blocked_verdict(gt_model, gt_tasks):
    same = with_pair(gt_tasks[0], corrupt=gt_tasks[0].pair.clean)
    assert same.pair.identical and not gt_tasks[0].pair.identical
    for path in ("fast", "reference"):
        rows = head_evidence(gt_model, [same], ["L1H0"], ("clean_to_corrupt", "zero"), path=path)
        assert [(r.status, r.reason) for r in rows] == [("invalid", "clean_equals_corrupt")] * 4
        verdict = decide([specificity_gap(rows)], rows)
        assert verdict.status == Status.BLOCKED
        assert "all 4 evidence rows were skipped or invalid: {'clean_equals_corrupt': 4}" in verdict.reasons[0]


def test_an_identical_pair_among_valid_ones_caps_at_insufficient_and_leaves_the_other_numbers_unchanged(
        gt_model, gt_tasks):
    same = with_pair(gt_tasks[0], corrupt=gt_tasks[0].pair.clean, prompt_id="same")
    ops = ("clean_to_corrupt", "zero", "mean", "resample")
    for path in ("fast", "reference"):
        alone = head_evidence(gt_model, gt_tasks, ["L1H0"], ops, path=path)
        mixed = head_evidence(gt_model, [same] + gt_tasks, ["L1H0"], ops, path=path)
        invalid = [r for r in mixed if not r.ok]
        assert len(invalid) == 2 * len(ops) and {r.prompt_id for r in invalid} == {"same"}
        assert [r.to_dict() for r in mixed if r.ok] == [r.to_dict() for r in alone]
        assert decide([specificity_gap(mixed)], mixed).status == Status.INSUFFICIENT


def test_an_identical_control_pair_makes_its_rows_invalid(gt_model, gt_tasks):
    suite, control = gt_tasks[0].controls[0]
    task = Task(gt_tasks[0].pair, ((suite, dataclasses.replace(control, corrupt=control.clean)),)
                + gt_tasks[0].controls[1:])
    rows = head_evidence(gt_model, [task], ["L1H0"], ("clean_to_corrupt",))
    assert {r.control_suite: (r.status, r.reason) for r in rows} == {
        suite: ("invalid", "clean_equals_corrupt"), gt_tasks[0].controls[1][0]: ("ok", None)}


# ------------------------------------------------------------------------------------------- SAE compatibility
@pytest.fixture(scope="module")
def gt_sae():
    return build_induction_sae()


@pytest.fixture(scope="module")
def gt_prompts():
    return torch.tensor([t.pair.clean for t in induction_tasks(0, n_per_family=4, families={"r": (12, 10)})])


@pytest.mark.parametrize("tokens, fragment", [
    (torch.zeros((0, 12), dtype=torch.long), "no prompts to check the SAE on (shape [0, 12])"),
    ([[0, 1, 2], [0, 1]], "not a [batch, pos] array of token ids"),
    (torch.zeros((2, 3)), "must be integer token ids, got dtype torch.float32"),
    ([0, 1, 2], "must be [batch, pos] token ids, got shape [3]"),
    ([[0, -1, 2]], "token id(s) outside the model's vocabulary [0, 32): -1 (prompt 0, position 1)"),
    ([[0, 1, 32]], "token id(s) outside the model's vocabulary [0, 32): 32 (prompt 0, position 2)"),
    ([[1] * (N_CTX + 1)], f"prompts of {N_CTX + 1} tokens exceed the model's context n_ctx={N_CTX}"),
])
def test_sae_check_blocks_prompts_it_cannot_run(gt_model, gt_sae, tokens, fragment):
    result = check_sae_compatibility(gt_model, gt_sae, tokens)
    assert not result.passed and result.caps_at == Status.BLOCKED
    assert fragment in result.reason, result.reason
    # Unusable prompts are structural: the diagnostic override does not lift them.
    assert check_sae_compatibility(gt_model, gt_sae, tokens, allow_mismatch=True).caps_at == Status.BLOCKED


def test_sae_check_passes_on_usable_prompts_as_a_list(gt_model, gt_sae, gt_prompts):
    result = check_sae_compatibility(gt_model, gt_sae, gt_prompts.tolist(), model_name="groundtruth:induction")
    assert result.passed and result.caps_at == Status.STRONG, result.reason
    assert result.details["n_prompts"] == 4


# ------------------------------------------------------------------------------------------------ report paths

NEAR_KEYS = ("heldout[a/b]", "heldout[a_b]", "heldout[a b]", "heldout[a:b]")


def test_parameter_ids_that_sanitize_alike_get_distinct_bounded_directories():
    names = [claim_dir_name(k) for k in NEAR_KEYS]
    assert len(set(names)) == 4 and all(n.startswith("heldout_a_b_-") and len(n) == 21 for n in names)
    long = claim_dir_name("heldout[" + "x" * 300 + "]")
    assert len(long) == MAX_DIR_NAME and long != claim_dir_name("heldout[" + "x" * 299 + "]")
    for hostile in ("..", ".", "", "../../etc"):
        assert claim_dir_name(hostile)[0] not in "./-", hostile
    # A safe key that looks hashed cannot take the name another key was given.
    assert claim_dir_name(names[0]) != names[0]


def test_plain_keys_keep_their_names():
    assert [claim_dir_name(k) for k in ("heldout", "replication", "gt-induction-L1H0", "x" * MAX_DIR_NAME)] == [
        "heldout", "replication", "gt-induction-L1H0", "x" * MAX_DIR_NAME]


def test_write_claim_test_keeps_each_parameter_id_in_its_own_directory(tmp_path):
    written = []
    for key in NEAR_KEYS + ("heldout",):
        payload = {"claim": {"id": "c", "statement": "s", "level": "candidate", "expect": "supported"},
                   "stage": "heldout", "key": key, "nodeid": f"test_c.py::test_heldout[{key}]", "outcome": "failed",
                   "verdict": None, "error": "boom"}
        written.append(write_claim_test(tmp_path, "r", payload, [], figure=False)["report_md"])
    dirs = {str(p).rsplit("/", 1)[0] for p in written}
    assert len(dirs) == 5 and all(d.startswith("claims/c/") and d.count("/") == 2 for d in dirs)
    assert "claims/c/heldout" in dirs
    assert all((tmp_path / p).is_file() for p in written)


def test_rerun_commands_quote_the_node_id():
    hostile = "test_x.py::test_y[a'; touch /tmp/pwned; echo '$(id)]"
    command = report.rerun_command(hostile)
    assert shlex.split(command) == ["python", "-m", "pytest", hostile]
    assert report.rerun_command("test_x.py::test_y") == "python -m pytest test_x.py::test_y"


def test_the_terminal_report_quotes_its_rerun_line():
    spec = parse_claim_marker(("c",), {"statement": "s"})
    text = report.claim_report(spec, None, decide([]), "t.py::test[x; rm -rf ~]")
    assert "rerun: python -m pytest 't.py::test[x; rm -rf ~]'" in text


HOSTILE_STATEMENT = "L1H0 <img src=x onerror=alert(1)> does [it](http://evil.example)\n# injected heading"


def _markdown(statement, prompt):
    rows = [EvidenceRow(unit="L1H0", intervention="zero", prompt_id=f"p{i}", family="f", control_suite="matched",
                        seed=0, target_delta=0.1, control_delta=0.9, prompt=prompt, control_prompt="c") for i in range(2)]
    payload = {"claim": {"id": "c", "statement": statement, "level": "candidate", "expect": "supported",
                         "units": ["L1H0"]},
               "stage": "heldout", "key": "heldout", "nodeid": "t.py::test_`x`", "outcome": "failed",
               "verdict": {"status": "falsified", "reasons": ["controls <b>moved</b>"], "row_accounting": {},
                           "gates": []}}
    return report.claim_report_markdown(report.claim_report_data(payload, rows, run_id="r"), None)


def test_markdown_and_html_in_statements_and_prompts_are_escaped():
    text = _markdown(HOSTILE_STATEMENT, "a | b <script>alert(1)</script>")
    assert not re.search(r"(?<!\\)<(img|script|b>)", text)  # every tag opener is escaped
    assert r"controls \<b\>moved\</b\>" in text
    assert r"> L1H0 \<img src=x onerror=alert\(1\)\> does \[it\]\(http://evil.example\) \# injected heading" in text
    assert not any(line.startswith("# injected") for line in text.splitlines())
    assert r"a \| b \<script\>alert\(1\)\</script\>" in text  # one table cell, not a new column
    assert "- test: `` t.py::test_`x` ``" in text  # the backticks stay inside the code span


def test_plain_statements_render_unchanged():
    text = _markdown("L1H0 copies the next token", "the cat sat")
    assert "> L1H0 copies the next token" in text and "| the cat sat |" in text


IDENTICAL_CLAIM = '''
import dataclasses
import pytest
from pytest_mechclaim.engine import head_evidence
from pytest_mechclaim.groundtruth import build_induction_model, induction_tasks
from pytest_mechclaim.tasks import Task

pytestmark = pytest.mark.claim("same", statement="s", units=["L1H0"], level="insufficient")

def test_same(mechclaim):
    tasks = induction_tasks(0, n_per_family=2)
    if {identical}:
        tasks = [Task(dataclasses.replace(t.pair, corrupt=t.pair.clean), t.controls) for t in tasks]
    rows = mechclaim.record(head_evidence(build_induction_model(), tasks, ["L1H0"], ("clean_to_corrupt",)))
    mechclaim.gate.specificity_gap(rows)
'''


@pytest.mark.parametrize("identical", [True, False])
def test_a_claim_on_identical_prompts_is_blocked_not_failed_by_a_task_error(pytester, identical):
    pytester.makeini("[pytest]\nstrict = true\nmechclaim_figures = false\n")
    pytester.makepyfile(test_same=IDENTICAL_CLAIM.format(identical=identical))
    result = pytester.runpytest("-v")
    out = result.stdout.str()
    assert "TaskError" not in out
    if identical:
        result.assert_outcomes(errors=1)
        result.stdout.fnmatch_lines(["*test_same BLOCKED*"])
        assert "all 8 evidence rows were skipped or invalid: {'clean_equals_corrupt': 8}" in out
    else:
        assert "BLOCKED" not in out and "clean_equals_corrupt" not in out, out
