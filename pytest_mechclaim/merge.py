"""Merge the ledger fragments of sharded CI jobs into one ledger, deterministically, refusing conflicts.

Past one host, claims shard across CI jobs (by file, or with pytest-split); each shard records its own fragment
(``pytest <its claims> --mechclaim-ledger shard-N.json --mechclaim-update-ledger``). Then:

    python -m pytest_mechclaim.merge mechclaim-ledger.json shard-1.json shard-2.json [...]

Every fragment is loaded and checked like any ledger (schema, duplicate keys, digests). A claim recorded by two
fragments must be recorded identically (run-specific fields aside), else the merge is refused and nothing is
written; a claim owned by one shard is taken whole. The result does not depend on the fragments' order.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .ledger import comparable, empty_ledger, load, write
from .ledger_schema import LedgerError


class MergeConflict(LedgerError):
    """Two fragments disagree about one claim."""


def merge_fragments(fragments: list[tuple[str, dict]]) -> dict:
    """One ledger from ``(name, ledger)`` fragments; MergeConflict names each claim two fragments disagree on."""
    merged = empty_ledger()
    owner: dict[str, str] = {}
    conflicts = []
    for name, fragment in sorted(fragments, key=lambda nf: nf[0]):
        for claim_id, block in sorted(fragment["claims"].items()):
            if claim_id not in merged["claims"]:
                merged["claims"][claim_id], owner[claim_id] = block, name
                continue
            a = comparable({"claims": {claim_id: merged["claims"][claim_id]}})
            b = comparable({"claims": {claim_id: block}})
            if a != b:
                conflicts.append(f"claim {claim_id!r}: {owner[claim_id]} and {name} record it differently")
        merged["runs"].update(fragment.get("runs", {}))
    if conflicts:
        raise MergeConflict("refusing to merge ledger fragments: " + "; ".join(conflicts))
    referenced = {e["run"]["id"] for c in merged["claims"].values() for e in c["stages"].values() if e.get("run")}
    merged["runs"] = {k: v for k, v in sorted(merged["runs"].items()) if k in referenced}
    return merged


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pytest_mechclaim.merge", description=__doc__.split("\n")[0])
    parser.add_argument("output", type=Path, help="the merged ledger to write (its Markdown view goes beside it)")
    parser.add_argument("fragments", type=Path, nargs="+", help="the shards' ledger fragments")
    args = parser.parse_args(argv)
    try:
        fragments = []
        for path in args.fragments:
            data = load(path)
            if data is None:
                raise LedgerError(f"ledger fragment {path} does not exist")
            fragments.append((str(path), data))
        merged = merge_fragments(fragments)
        write(args.output, merged)
    except LedgerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"merged {len(args.fragments)} fragments, {len(merged['claims'])} claims -> {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
