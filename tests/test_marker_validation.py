"""Fail-closed claim markers: every field type-checked, one claim marker per test, one spec per claim id, and a
malformed marker is the same clear collection error serially and under xdist. Each rule bites and passes."""

from __future__ import annotations

import pytest

from pytest_mechclaim.spec import ClaimSpecError, parse_claim_marker

pytest_plugins = ["pytester"]


@pytest.mark.parametrize("key, value, shown", [
    ("units", None, "units must be a list of non-empty strings (e.g. ['L1H0']), got None"),
    ("units", 5, "got 5"),
    ("units", {"L1H0"}, "got {'L1H0'}"),
    ("units", {"L1H0": 1}, "got {'L1H0': 1}"),
    ("units", ["L1H0", 3], "got ['L1H0', 3]"),
    ("units", [""], "got ['']"),
    ("model", 5, "model must be a non-empty string, got 5"),
    ("hook", "", "hook must be a non-empty string, got ''"),
    ("sae", ["x"], "sae must be a non-empty string, got ['x']"),
    ("statement", 5, "statement must be a string, got 5"),
    ("statement", None, "statement= is required"),
])
def test_every_marker_field_is_type_checked_with_the_value_shown(key, value, shown):
    kwargs = {"statement": "s", key: value}
    with pytest.raises(ClaimSpecError) as err:
        parse_claim_marker(("c",), kwargs)
    assert shown in str(err.value)


def test_well_typed_marker_fields_parse():
    spec = parse_claim_marker(("c",), {"statement": " s ", "units": ("L1H0", "L1H1"), "model": "gpt2",
                                       "hook": "blocks.1.attn.hook_z", "sae": "my-sae"})
    assert (spec.statement, spec.units, spec.model, spec.hook, spec.sae) == (
        "s", ("L1H0", "L1H1"), "gpt2", "blocks.1.attn.hook_z", "my-sae")
    assert parse_claim_marker(("c",), {"statement": "s", "units": ["L1H0"]}).units == ("L1H0",)


def collect(pytester, **files):
    pytester.makeini("[pytest]\nstrict = true\n")
    pytester.makepyfile(**files)
    return pytester.runpytest("--collect-only", "-q")


TWO_MARKERS = '''
import pytest
pytestmark = pytest.mark.claim("c", statement="module statement", units=["L1H0"])

@pytest.mark.claim("c", statement={inner!r}, units=["L1H0"])
def test_a(mechclaim):
    pass
'''


def test_a_test_marker_that_changes_its_modules_claim_is_a_collection_error(pytester):
    result = collect(pytester, test_two=TWO_MARKERS.format(inner="test statement"))
    assert result.ret == pytest.ExitCode.INTERRUPTED
    result.stdout.fnmatch_lines(["*ERROR collecting test_two.py*", "*malformed claim marker(s):*",
                                 "*test_two.py: test_a has claim markers that disagree, on the test itself and on "
                                 "module test_two.py (statement: 'test statement' != 'module statement')*"])


def test_a_test_marker_repeating_its_modules_claim_is_accepted(pytester):
    result = collect(pytester, test_two=TWO_MARKERS.format(inner="module statement"))
    assert result.ret == pytest.ExitCode.OK, result.stdout.str()
    result.stdout.fnmatch_lines(["test_two.py::test_a"])


def test_a_class_marker_and_stacked_markers_must_agree_too(pytester):
    result = collect(pytester, test_cls='''
        import pytest

        class TestC:
            pytestmark = pytest.mark.claim("c", statement="s", level="candidate")

            @pytest.mark.claim("c", statement="s", level="strong")
            def test_a(self, mechclaim):
                pass
    ''', test_stacked='''
        import pytest

        @pytest.mark.claim("d", statement="s", units=["L1H0"])
        @pytest.mark.claim("d", statement="s", units=["L1H1"])
        def test_b(mechclaim):
            pass
    ''', test_twice='''
        import pytest

        @pytest.mark.claim("e", statement="s")
        @pytest.mark.claim("e", statement="s")
        def test_same_twice(mechclaim):
            pass
    ''')
    result.stdout.fnmatch_lines_random([
        "*test_cls.py: test_a has claim markers that disagree, on the test itself and on class TestC (level: "
        "'strong' != 'candidate')*",
        "*test_stacked.py: test_b has claim markers that disagree, on the test itself (units: ('L1H1',) != "
        "('L1H0',))*"])
    result.stdout.fnmatch_lines(["test_twice.py::test_same_twice"])  # two identical markers are one claim
    assert "2 errors" in result.stdout.str()


def test_one_claim_id_with_conflicting_specs_across_a_modules_tests_is_an_error(pytester):
    result = collect(pytester, test_conflict='''
        import pytest

        @pytest.mark.heldout
        @pytest.mark.claim("c", statement="s", units=["L1H0"])
        def test_a(mechclaim):
            pass

        @pytest.mark.replication
        @pytest.mark.claim("c", statement="s", units=["L1H0"], expect="rejected")
        def test_b(mechclaim):
            pass
    ''')
    assert result.ret == pytest.ExitCode.INTERRUPTED
    result.stdout.fnmatch_lines(["*test_conflict.py: claim 'c' has conflicting specs in test_b and test_a "
                                 "(expect: 'rejected' != 'supported'): one claim id has one spec*"])


def test_one_claim_id_with_one_spec_across_a_modules_tests_is_accepted(pytester):
    result = collect(pytester, test_agree='''
        import pytest

        @pytest.mark.heldout
        @pytest.mark.claim("c", statement="s", units=["L1H0"])
        def test_a(mechclaim):
            pass

        @pytest.mark.replication
        @pytest.mark.claim("c", statement="s", units=("L1H0",))
        def test_b(mechclaim):
            pass
    ''')
    assert result.ret == pytest.ExitCode.OK, result.stdout.str()
    result.stdout.fnmatch_lines(["test_agree.py::test_a", "test_agree.py::test_b"])


BAD_LEVEL = '''
import pytest
pytestmark = pytest.mark.claim("ok-id", statement="s", level="certain")

def test_a(mechclaim):
    pass
'''
EXPECTED_ERROR = ["*ERROR collecting test_bad.py*", "*malformed claim marker(s):*",
                  "*test_bad.py: claim 'ok-id': unknown level 'certain'*"]


def test_a_malformed_marker_is_the_same_collection_error_under_xdist(pytester):
    pytester.makeini("[pytest]\nstrict = true\n")
    pytester.makepyfile(test_bad=BAD_LEVEL, test_plain="def test_plain():\n    pass\n")
    serial = pytester.runpytest_subprocess()
    parallel = pytester.runpytest_subprocess("-p", "xdist", "-n", "2")
    for result in (serial, parallel):
        result.stdout.fnmatch_lines(EXPECTED_ERROR)
        assert "INTERNALERROR" not in result.stdout.str() + result.stderr.str()
        assert result.ret not in (pytest.ExitCode.OK, pytest.ExitCode.INTERNAL_ERROR)
    assert serial.ret == pytest.ExitCode.INTERRUPTED
    parallel.assert_outcomes(passed=1, errors=1)  # xdist still runs the files that collected


LATE_MARKER_CONFTEST = '''
import pytest

def pytest_collection_modifyitems(items):
    for item in items:
        item.add_marker(pytest.mark.claim("late", statement="s", level={level!r}))
'''


@pytest.mark.parametrize("level, malformed", [("certain", True), ("candidate", False)])
def test_a_claim_marker_added_after_collection_is_checked_too(pytester, level, malformed):
    pytester.makeconftest(LATE_MARKER_CONFTEST.format(level=level))
    result = collect(pytester, test_late="def test_a(mechclaim):\n    pass\n")
    if malformed:
        assert result.ret == pytest.ExitCode.USAGE_ERROR
        result.stderr.fnmatch_lines(["*malformed claim marker(s):*", "*test_late.py: claim 'late': unknown level*"])
    else:
        assert result.ret == pytest.ExitCode.OK, result.stdout.str() + result.stderr.str()
