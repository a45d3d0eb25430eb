"""Claim kinds: a claim module declares model, units, bank and controls; the kind generates its stage tests.

Like a Hypothesis strategy, a kind keeps *what* apart from *how*: ``HeadClaim(...).tests()`` and
``SAEFeatureClaim(...).tests()`` return a test class carrying the claim marker and one test per stage, each
recording what the evidence policy requires (target rows with control units, seeds, suites, interventions,
baseline rows) and the kind's own gates. The plugin judges; a claim can add gates, never drop the policy's.
Every staged claim's candidates are frozen before scoring in the run's store (``kinds.frozen``).
"""

from .frozen import FrozenStore, frozen_store
from .head import AttentionPrior, CausalSearch, GroundTruthBank, HeadClaim, HeadDiscovery, InductionBank, Preregistered
from .mechanism import Mechanism
from .sae import ABLATE_AMPLIFY, MATCHED, SELECTION_MODES, SUITES, SAEFeatureClaim, SAEStudy

__all__ = ["ABLATE_AMPLIFY", "AttentionPrior", "CausalSearch", "FrozenStore", "GroundTruthBank", "HeadClaim",
           "HeadDiscovery", "InductionBank", "MATCHED", "Mechanism", "Preregistered", "SAEFeatureClaim", "SAEStudy",
           "SELECTION_MODES", "SUITES", "frozen_store"]
