"""Every Python block of README.md and docs/authoring.md is a complete claim module that runs green in an empty
project with only the installed plugin: the documentation cannot rot."""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import pytest
import transformer_lens  # noqa: F401  (imported before any inner session: datasets registers its types once)

with warnings.catch_warnings():
    warnings.filterwarnings("ignore", "The 'utils' module has been deprecated", DeprecationWarning)
    import sae_lens  # noqa: F401

pytest_plugins = ["pytester"]
ROOT = Path(__file__).resolve().parents[1]
DOCS = ("README.md", "docs/authoring.md")


def python_blocks(path: Path) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", path.read_text(), flags=re.S | re.M)


BLOCKS = [(f"{doc}#{i}", block) for doc in DOCS for i, block in enumerate(python_blocks(ROOT / doc), 1)]


def test_the_docs_have_the_blocks_they_promise():
    names = [name for name, _ in BLOCKS]
    assert "README.md#1" in names
    assert sum(name.startswith("docs/authoring.md") for name in names) >= 4  # head, SAE, custom, waiver


@pytest.mark.parametrize("block", [b for _, b in BLOCKS], ids=[n for n, _ in BLOCKS])
def test_a_documented_claim_module_runs_green_in_an_empty_project(pytester, block):
    pytester.makeini("[pytest]\nstrict = true\nmechclaim_figures = false\n")
    pytester.makepyfile(test_doc_block=block)
    result = pytester.runpytest("-p", "no:cacheprovider", "-W", "ignore::pytest.PytestAssertRewriteWarning")
    assert result.ret == pytest.ExitCode.OK, result.stdout.str()
    outcomes = result.parseoutcomes()
    assert outcomes.get("passed", 0) >= 1 and not outcomes.get("failed") and not outcomes.get("error")
