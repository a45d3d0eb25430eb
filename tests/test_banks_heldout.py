"""Frozen candidate sets and held-out disjointness, on the real SmolLM2-tokenized induction banks."""

import json

import pytest

from pytest_mechclaim.banks import induction
from pytest_mechclaim.banks.heldout import (FrozenSetError, HeldoutLeak, check_heldout, check_units,
                                            freeze_candidates, load_frozen)


@pytest.fixture
def frozen(tmp_path, induction_bank):
    return freeze_candidates(tmp_path / "frozen.json", "smollm2-induction", ["L18H6", "L17H4"],
                             induction_bank["discovery"].tasks)


def test_frozen_set_round_trips_with_its_hash(frozen):
    again = load_frozen(frozen.path)
    assert again == frozen and again.units == ("L17H4", "L18H6")
    assert again.discovery_seeds == induction.DISCOVERY_SEEDS
    assert len(again.content_hash) == 64


def test_heldout_bank_is_disjoint_from_discovery(frozen, induction_bank):
    summary = check_heldout(frozen, induction_bank["heldout"].tasks)
    assert summary["seeds"] == list(induction.HELDOUT_SEEDS)
    check_units(frozen, ["L18H6"])


def test_a_heldout_prompt_seen_in_discovery_is_a_leak(frozen, induction_bank):
    leaked = induction_bank["heldout"].tasks + induction_bank["discovery"].tasks[:1]
    with pytest.raises(HeldoutLeak, match="prompts also appear in discovery"):
        check_heldout(frozen, leaked)


def test_reusing_discovery_seeds_or_families_is_a_leak(frozen, smollm2_tokenizer):
    same_seed = induction.build_tasks(induction.induction_bank("heldout", 0, n_per_family=2,
                                                               tokenizer=smollm2_tokenizer), smollm2_tokenizer)
    with pytest.raises(HeldoutLeak, match=r"seeds also used in discovery: \[0\]"):
        check_heldout(frozen, same_seed.tasks)
    same_family = induction.build_tasks(induction.induction_bank("discovery", 99, n_per_family=2,
                                                                 tokenizer=smollm2_tokenizer), smollm2_tokenizer)
    with pytest.raises(HeldoutLeak, match="families also used in discovery"):
        check_heldout(frozen, same_family.tasks)


def test_the_frozen_set_cannot_grow_or_change(frozen, induction_bank):
    with pytest.raises(FrozenSetError, match=r"units \['L5H0'\] are not in the frozen candidate set"):
        check_units(frozen, ["L18H6", "L5H0"])
    with pytest.raises(FrozenSetError, match="cannot change the frozen set"):
        freeze_candidates(frozen.path, "smollm2-induction", ["L18H6", "L17H4", "L5H0"],
                          induction_bank["discovery"].tasks)
    same = freeze_candidates(frozen.path, "smollm2-induction", ["L17H4", "L18H6"], induction_bank["discovery"].tasks)
    assert same.content_hash == frozen.content_hash


def test_an_edited_frozen_file_is_refused(frozen, tmp_path):
    data = json.loads(frozen.path.read_text())
    data["units"].append("L5H0")
    frozen.path.write_text(json.dumps(data))
    with pytest.raises(FrozenSetError, match="content hash mismatch"):
        load_frozen(frozen.path)
    with pytest.raises(FrozenSetError, match="freeze the candidates before held-out scoring"):
        load_frozen(tmp_path / "missing.json")
