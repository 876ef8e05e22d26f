"""The decomposer's LoRA adapters by name: built once at start-up, read per request."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from service.core.errors import InvalidRequest
from service.core.settings import NO_ADAPTER, Settings


@dataclass(frozen=True)
class Adapters:
    """Adapter directories by name, and the one a request gets when it names none."""

    paths: Mapping[str, str]
    default: str | None

    @classmethod
    def from_settings(cls, settings: Settings) -> Adapters:
        # The one disk scan (for the shipped adapters), when the app starts.
        paths = settings.decomposer_adapters
        return cls(paths=dict(paths), default=settings.default_adapter_among(paths))

    @property
    def names(self) -> list[str]:
        return sorted(self.paths)

    def pick(self, requested: str | None) -> str | None:
        """The adapter for a request's ``decomposer_adapter``: None = the base model."""
        if requested is None:
            return self.default
        if requested == NO_ADAPTER:
            return None
        if requested not in self.paths:
            known = ", ".join([NO_ADAPTER, *self.names])
            raise InvalidRequest(f"unknown decomposer_adapter {requested!r}; available: {known}")
        return requested
