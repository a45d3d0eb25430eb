"""Progress of long steps reaches the terminal past output capture, and a fresh conversion of the real model into
an empty cache gives exactly the weights the ledger was recorded with."""

from __future__ import annotations

import pytest

pytest_plugins = ["pytester"]

CONVERT = '''
from pytest_mechclaim import models


def test_convert_into_an_empty_cache(tmp_path):
    folder = models.smollm2_hf_dir(tmp_path / "cache")
    assert models.file_sha256(folder / "model.safetensors") == models.SMOLLM2_WEIGHTS_SHA256
'''

STEP = '''
from pytest_mechclaim.progress import step


def test_step():
    with step("building a thing"):
        pass
'''


def test_a_conversion_into_an_empty_cache_reports_progress_and_the_recorded_weights(pytester):
    pytest.importorskip("gguf")
    pytester.makepyfile(test_convert=CONVERT)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    assert result.ret == pytest.ExitCode.OK, result.stdout.str()
    result.stdout.fnmatch_lines(["mechclaim: converting SmolLM2-135M-Instruct.Q4_1.gguf to an fp32 HF folder *"
                                 "done in * s"])


@pytest.mark.parametrize("mode, expected, absent", [
    ("lines", ["mechclaim: building a thing done in * s"], "building a thing ..."),
    ("live", ["mechclaim: building a thing ...", "mechclaim: building a thing done in * s"], None),
    ("off", [], "building a thing"),
])
def test_progress_modes(pytester, mode, expected, absent):
    pytester.makepyfile(test_step=STEP)
    result = pytester.runpytest(f"--mechclaim-progress={mode}")
    assert result.ret == pytest.ExitCode.OK
    if expected:
        result.stdout.fnmatch_lines(expected)
    if absent:
        assert absent not in result.stdout.str()
