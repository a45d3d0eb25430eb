"""Held-out discipline: freeze the candidate set before held-out scoring, and keep held-out data disjoint.

``freeze_candidates`` writes a JSON file (sorted keys, content hash) holding the candidate units and a
fingerprint of every discovery prompt, family and seed. Later stages read it back (``load_frozen`` verifies the
hash), may only score those units (``check_units``), and must use families, seeds and prompts that discovery never
saw (``check_heldout``). Refreezing a different set at the same path is refused: the set is fixed once.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

from ..tasks import PromptPair, Task

SCHEMA = "pytest_mechclaim.frozen_candidates.v1"


class HeldoutLeak(ValueError):
    """Held-out data overlaps discovery (a prompt, family or seed)."""


class FrozenSetError(ValueError):
    """A frozen candidate file that is missing, tampered with, or being changed after freezing."""


def prompt_fingerprint(tokens: Sequence[int]) -> str:
    return hashlib.sha256(",".join(str(int(t)) for t in tokens).encode()).hexdigest()[:16]


def _prompts(tasks: Iterable[Task]) -> dict[str, str]:
    """fingerprint -> prompt id, over every clean and corrupt prompt of every pair and control."""
    out = {}
    for t in tasks:
        pairs: list[PromptPair] = [t.pair] + [c for _, c in t.controls]
        for p in pairs:
            out.setdefault(prompt_fingerprint(p.clean), p.prompt_id)
            out.setdefault(prompt_fingerprint(p.corrupt), p.prompt_id)
    return out


def _content_hash(body: dict) -> str:
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


@dataclass(frozen=True)
class FrozenCandidates:
    claim_id: str
    units: tuple[str, ...]
    discovery_families: tuple[str, ...]
    discovery_seeds: tuple[int, ...]
    discovery_prompts: tuple[str, ...]
    content_hash: str
    path: Path | None = None

    def body(self) -> dict:
        return {"schema": SCHEMA, "claim_id": self.claim_id, "units": list(self.units),
                "discovery_families": list(self.discovery_families), "discovery_seeds": list(self.discovery_seeds),
                "discovery_prompts": list(self.discovery_prompts)}


def freeze_candidates(path: str | Path, claim_id: str, units: Sequence[str],
                      discovery_tasks: Iterable[Task]) -> FrozenCandidates:
    """Write the frozen candidate set; idempotent for the same content, an error for a different one."""
    tasks = list(discovery_tasks)
    if not units:
        raise FrozenSetError("an empty candidate set cannot be frozen")
    if not tasks:
        raise FrozenSetError("freezing needs the discovery tasks (their prompts are what held-out must avoid)")
    body = {"schema": SCHEMA, "claim_id": claim_id, "units": sorted(set(units)),
            "discovery_families": sorted({t.pair.family for t in tasks}),
            "discovery_seeds": sorted({t.pair.seed for t in tasks if t.pair.seed is not None}),
            "discovery_prompts": sorted(_prompts(tasks))}
    digest = _content_hash(body)
    path = Path(path)
    if path.exists():
        existing = load_frozen(path)
        if existing.content_hash != digest:
            raise FrozenSetError(f"{path} already freezes candidates {list(existing.units)} (hash "
                                 f"{existing.content_hash[:12]}); a later stage cannot change the frozen set")
        return existing
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(dict(body, content_hash=digest), sort_keys=True, indent=1) + "\n")
    tmp.replace(path)
    return load_frozen(path)


def load_frozen(path: str | Path) -> FrozenCandidates:
    path = Path(path)
    if not path.is_file():
        raise FrozenSetError(f"no frozen candidate set at {path}: freeze the candidates before held-out scoring")
    data = json.loads(path.read_text())
    stored = data.pop("content_hash", None)
    if data.get("schema") != SCHEMA:
        raise FrozenSetError(f"{path}: not a frozen candidate file (schema {data.get('schema')!r})")
    if stored != _content_hash(data):
        raise FrozenSetError(f"{path}: content hash mismatch, the frozen set was edited after freezing")
    return FrozenCandidates(data["claim_id"], tuple(data["units"]), tuple(data["discovery_families"]),
                            tuple(data["discovery_seeds"]), tuple(data["discovery_prompts"]), stored, path)


def check_units(frozen: FrozenCandidates, units: Iterable[str]) -> None:
    """A later stage keeps, downgrades or kills candidates; it never adds one."""
    extra = sorted(set(units) - set(frozen.units))
    if extra:
        raise FrozenSetError(f"units {extra} are not in the frozen candidate set {list(frozen.units)}")


def check_heldout(frozen: FrozenCandidates, heldout_tasks: Iterable[Task]) -> dict:
    """Raise ``HeldoutLeak`` when held-out tasks reuse a discovery family, seed or prompt; else a summary."""
    tasks = list(heldout_tasks)
    if not tasks:
        raise HeldoutLeak("no held-out tasks to check")
    families = sorted({t.pair.family for t in tasks} & set(frozen.discovery_families))
    seeds = sorted({t.pair.seed for t in tasks if t.pair.seed is not None} & set(frozen.discovery_seeds))
    prompts = _prompts(tasks)
    shared = sorted(set(prompts) & set(frozen.discovery_prompts))
    problems = []
    if families:
        problems.append(f"families also used in discovery: {families}")
    if seeds:
        problems.append(f"seeds also used in discovery: {seeds}")
    if shared:
        problems.append(f"{len(shared)} held-out prompts also appear in discovery (first: {prompts[shared[0]]})")
    if problems:
        raise HeldoutLeak("held-out data is not disjoint from discovery: " + "; ".join(problems))
    return {"n_tasks": len(tasks), "n_prompts": len(prompts), "families": sorted({t.pair.family for t in tasks}),
            "seeds": sorted({t.pair.seed for t in tasks if t.pair.seed is not None})}
