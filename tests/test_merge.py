"""Sharded CI: each shard records a ledger fragment; the merge is deterministic and refuses conflicting fragments."""

from __future__ import annotations

import json

import pytest

from pytest_mechclaim import merge

pytest_plugins = ["pytester"]

CLAIM = '''
import pytest
from pytest_mechclaim.evidence import EvidenceRow

pytestmark = pytest.mark.claim("c-{name}", statement="L1H0 moves the target", level="candidate",
                               expect="rejected", units=["L1H0"])


@pytest.mark.heldout
def test_heldout(mechclaim):
    mechclaim.record([EvidenceRow(unit="L1H0", intervention="zero", prompt_id=f"p{{i}}", family=f"f{{i % 2}}",
                                  control_suite="matched", seed=i % 3, target_delta={target}, control_delta=0.9,
                                  prompt=f"prompt {{i}}") for i in range(12)])
'''


@pytest.fixture
def shards(pytester: pytest.Pytester):
    pytester.makeini("[pytest]\nmechclaim_figures = false\n")
    pytester.makepyfile(test_a=CLAIM.format(name="a", target=-0.1), test_b=CLAIM.format(name="b", target=0.1))
    for shard, path in (("1", "test_a.py"), ("2", "test_b.py")):
        result = pytester.runpytest(path, "--mechclaim-ledger", f"shard-{shard}.json", "--mechclaim-update-ledger")
        assert result.ret == pytest.ExitCode.OK
    return pytester


def test_two_shards_merge_into_the_ledger_a_single_run_would_compare_clean_with(shards):
    assert merge.main(["mechclaim-ledger.json", "shard-1.json", "shard-2.json"]) == 0
    merged = json.loads((shards.path / "mechclaim-ledger.json").read_text())
    assert sorted(merged["claims"]) == ["c-a", "c-b"]
    assert (shards.path / "mechclaim-ledger.md").is_file()
    # The whole suite, unsharded, matches the merged ledger (strict: every stage judged).
    result = shards.runpytest("--mechclaim-strict")
    assert result.ret == pytest.ExitCode.OK
    result.stdout.fnmatch_lines(["*all judged claim stages match the ledger*"])
    # Deterministic: the fragments' order does not matter.
    first = (shards.path / "mechclaim-ledger.json").read_text()
    assert merge.main(["other.json", "shard-2.json", "shard-1.json"]) == 0
    assert (shards.path / "other.json").read_text() == first


def test_conflicting_fragments_are_refused_and_nothing_is_written(shards, capsys):
    # A third shard records claim c-a again, from different evidence: its status differs from shard 1's.
    shards.makepyfile(test_a=CLAIM.format(name="a", target=0.5))
    assert shards.runpytest("test_a.py", "--mechclaim-ledger", "shard-3.json",
                            "--mechclaim-update-ledger").ret == pytest.ExitCode.OK
    assert merge.main(["mechclaim-ledger.json", "shard-1.json", "shard-2.json", "shard-3.json"]) == 2
    assert "claim 'c-a': shard-1.json and shard-3.json record it differently" in capsys.readouterr().err
    assert not (shards.path / "mechclaim-ledger.json").exists()


def test_a_missing_or_tampered_fragment_is_an_error(shards, capsys):
    assert merge.main(["out.json", "shard-1.json", "nope.json"]) == 2
    assert "nope.json does not exist" in capsys.readouterr().err
    data = json.loads((shards.path / "shard-2.json").read_text())
    data["claims"]["c-b"]["status"] = "strong"
    (shards.path / "shard-2.json").write_text(json.dumps(data))
    assert merge.main(["out.json", "shard-1.json", "shard-2.json"]) == 2
    assert "digest" in capsys.readouterr().err
    assert not (shards.path / "out.json").exists()
