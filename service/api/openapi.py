"""The OpenAPI schema, with the limits this service enforces written into it.

Pydantic knows the static rules (types, ``ge=1``); the rest come from the
settings: the limits on question and context lengths, on subquestions and on
the deadline (``service/core/input_limits.py``, the same object that checks
them), and the choices: the solver profiles, the adapters, the model names and
the embedded model's context. Writing them into
``/openapi.json`` lets clients and fuzzers (schemathesis) generate requests
the service accepts; the service stays the judge (a request outside them is
a 422 either way).
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from service.api.openai_compat import embedded_name
from service.core.input_limits import InputLimits
from service.core.settings import NO_ADAPTER, Settings
from service.decomposer.adapters import Adapters

Schema = dict[str, Any]


def _field(model: Schema, name: str) -> Schema:
    """A property's own schema: the non-null branch of an optional field."""
    prop: Schema = model["properties"][name]
    for branch in prop.get("anyOf", []):
        if branch.get("type") != "null":
            return branch  # type: ignore[no-any-return]
    return prop


def limits(settings: Settings) -> dict[str, dict[str, Schema]]:
    """Per request schema, per field: the JSON Schema keywords to add."""
    adapters = [NO_ADAPTER, *Adapters.from_settings(settings).names]
    solvers = sorted(settings.solver_profiles)
    bounds = InputLimits.from_settings(settings).json_schema()
    common: dict[str, Schema] = {
        "max_subquestions": bounds["max_subquestions"],
        "timeout_s": bounds["timeout_s"],
        "decomposer_adapter": {"enum": adapters},
    }
    request = {**common, "question": bounds["question"], "context": bounds["context"]}
    embedded = embedded_name(settings)
    models = [*settings.pipeline_models, *([embedded] if embedded else [])]
    chat = {
        **common,
        "solver": {"enum": solvers},
        "model": {"enum": models},
        "max_tokens": bounds["max_tokens"],
        "max_completion_tokens": bounds["max_completion_tokens"],
    }
    return {
        "DecomposeRequest": request,
        "SolveRequest": {**request, "solver": {"enum": solvers}},
        "ChatRequest": chat,
    }


def install(app: FastAPI, settings: Settings) -> None:
    """Serve ``/openapi.json`` with the settings' limits (built once, on first request)."""

    def openapi() -> Schema:
        if app.openapi_schema is None:
            schema = get_openapi(
                title=app.title,
                version=app.version,
                description=app.description,
                routes=app.routes,
            )
            components = schema["components"]["schemas"]
            for model, fields in limits(settings).items():
                for name, keywords in fields.items():
                    _field(components[model], name).update(keywords)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
