"""API keys as tenants: what one entry of ``DIVCONQ_API_KEYS`` means.

An entry is a plain string (an unlimited key, named ``key-1``, ``key-2`` ... by
its position) or an object::

    {"name": "team-a", "key": "sk-...", "requests_per_minute": 60,
     "tokens_per_minute": 100000, "usd_per_day": 5.0, "admin": false}

The name is what logs, metrics labels, the limits store and the ledger see;
the secret is a ``SecretStr`` and never leaves this process.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, SecretStr

# Metric label values and store keys: short, printable, no separators that
# Redis keys or PromQL would trip on.
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"


class ApiKey(BaseModel):
    """One client key and the limits that apply to it (unset = unlimited)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(..., pattern=NAME_PATTERN, description="Tenant name: logs, metrics, ledger.")
    key: SecretStr = Field(..., min_length=1, description="The bearer secret.")
    requests_per_minute: int | None = Field(None, ge=1, description="Admitted per UTC minute.")
    tokens_per_minute: int | None = Field(
        None, ge=1, description="Tokens per UTC minute: reserved at admission, then settled."
    )
    usd_per_day: float | None = Field(
        None, gt=0, allow_inf_nan=False, description="Spend per UTC day, from DIVCONQ_PRICES."
    )
    admin: bool = Field(False, description="May read other tenants' usage (/v1/usage).")

    @property
    def limited(self) -> bool:
        """Whether any limit applies (an unlimited key never touches the store)."""
        return (
            self.requests_per_minute is not None
            or self.tokens_per_minute is not None
            or self.usd_per_day is not None
        )


def parse_keys(raw: Any) -> Any:
    """``DIVCONQ_API_KEYS`` entries as ``ApiKey`` fields: strings become named objects.

    Anything else is passed on for pydantic to validate (and to name in its error).
    """
    if not isinstance(raw, list):
        return raw
    out: list[Any] = []
    for i, entry in enumerate(raw, 1):
        if isinstance(entry, str | SecretStr):
            out.append({"name": f"key-{i}", "key": entry})
        else:
            out.append(entry)
    return out


def check_unique(keys: list[ApiKey]) -> None:
    """Two entries with one name or one secret would make usage ambiguous."""
    names = [k.name for k in keys]
    if len(set(names)) != len(names):
        dup = next(n for n in names if names.count(n) > 1)
        raise ValueError(f"DIVCONQ_API_KEYS: the name {dup!r} is used twice")
    secrets = [k.key.get_secret_value() for k in keys]
    if len(set(secrets)) != len(secrets):
        raise ValueError("DIVCONQ_API_KEYS: two entries share one key")
