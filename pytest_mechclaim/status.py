"""The one status ladder every claim, gate and seed rule maps onto.

blocked < falsified < insufficient < candidate < strong

``blocked`` means the evidence could not be produced or trusted (incompatible SAE, non-finite numbers, failed
calibration, missing controls); it is never a pass. ``falsified`` means the evidence speaks against the claim
(controls move as much as the target, wrong sign, no effect). ``insufficient`` means the evidence is real but too
weak or too narrow. ``candidate`` passes every candidate gate; ``strong`` also clears the mechanical floor.
"""

from __future__ import annotations

import enum


class Status(enum.IntEnum):
    BLOCKED = 0
    FALSIFIED = 1
    INSUFFICIENT = 2
    CANDIDATE = 3
    STRONG = 4

    @classmethod
    def parse(cls, value: "str | Status") -> "Status":
        if isinstance(value, Status):
            return value
        try:
            return cls[str(value).strip().upper()]
        except KeyError:
            raise ValueError(
                f"unknown status {value!r}; expected one of {', '.join(s.label for s in cls)}"
            ) from None

    @property
    def label(self) -> str:
        return self.name.lower()

    def __str__(self) -> str:
        return self.label


LEVELS = tuple(s.label for s in Status)
