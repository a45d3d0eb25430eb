"""Exactly the dependency deprecations the plugin's own calls trigger, silenced around those calls only.

TransformerLens 3.9 deprecates HookedTransformer (TL 4 keeps only the bridge) and its ``utils`` module, but
sae-lens 6 needs TL < 4, so the plugin must use both. A global ini filter would also hide these notices in users'
own code; ``warnings.catch_warnings`` around the plugin's calls keeps ``-W error`` runs green and users' warnings
theirs.
"""

from __future__ import annotations

import contextlib
import warnings

DEPENDENCY_DEPRECATIONS = (
    "HookedTransformer is deprecated",
    "The 'utils' module has been deprecated",
)


@contextlib.contextmanager
def dependency_deprecations():
    with warnings.catch_warnings():
        for message in DEPENDENCY_DEPRECATIONS:
            warnings.filterwarnings("ignore", message=message, category=DeprecationWarning)
        yield
