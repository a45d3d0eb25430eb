"""Repository-level fixtures particular to this repository's claims and tests (fixtures/); the models, SAEs,
runtime and generic task banks come from the installed plugin (entry point ``mechclaim-fixtures``)."""

pytest_plugins = ["fixtures.saes", "fixtures.banks"]
