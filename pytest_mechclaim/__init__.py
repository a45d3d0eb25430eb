"""pytest-mechclaim: mechanistic-interpretability claims as tests.

The data path, one module per step: spec (claim marker) -> fixtures -> engine (interventions) -> evidence rows ->
gates -> verdict -> ledger and reports. Gates and the verdict are pure and import no torch.
"""

from .evidence import BaselineRow, EvidenceRow
from .gates import GateResult, MetricCalibrationRow
from .spec import ClaimSpec, ClaimSpecError
from .status import Status
from .verdict import Verdict, decide

__version__ = "0.1.0"

__all__ = [
    "BaselineRow",
    "ClaimSpec",
    "ClaimSpecError",
    "EvidenceRow",
    "GateResult",
    "MetricCalibrationRow",
    "Status",
    "Verdict",
    "decide",
]
