"""Repository-level fixtures: the models, SAEs and task banks in fixtures/ are available to claims/ and tests/."""

pytest_plugins = ["fixtures.models", "fixtures.saes", "fixtures.banks"]
