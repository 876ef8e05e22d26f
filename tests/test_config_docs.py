"""docs/configuration.md and .env.example are generated from ``Settings``
(service/cli/config_docs.py): this fails when either and the code disagree,
for instance after a setting was added, and says what to run."""

from __future__ import annotations

from service.cli import config_docs
from service.core.settings import Settings


def test_every_setting_has_a_description() -> None:
    assert config_docs.undocumented() == [], (
        "give these settings a Field(description=...) in service/core/settings.py"
    )


def test_configuration_reference_and_env_example_match_the_code() -> None:
    stale = [str(p.relative_to(config_docs.ROOT)) for p in config_docs.stale()]
    assert stale == [], (
        f"{', '.join(stale)} out of date with service/core/settings.py: run "
        f"`{config_docs.COMMAND}` (or `python -m service config-docs`) and commit the result"
    )


def test_the_reference_lists_every_setting_with_its_default() -> None:
    text = config_docs.render_markdown()
    assert "| `DIVCONQ_SOLVER__MAX_RETRIES` | `2` |" in text
    assert "| `DIVCONQ_SOLVER__API_KEY` | unset |" in text
    assert "| `DIVCONQ_DATA_DIR` | `~/.cache/divconq` |" in text
    listed = {line.split("`")[1] for line in text.splitlines() if line.startswith("| `DIVCONQ_")}
    fields = {f"DIVCONQ_{n.upper()}" for n in Settings.model_fields}
    assert {name.split("__")[0] for name in listed} == fields
