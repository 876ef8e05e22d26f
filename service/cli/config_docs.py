"""The configuration reference and `.env.example`, generated from ``Settings``.

Every setting is documented once, in its ``Field(description=...)`` in
``service/core/settings.py``. ``divconq config-docs`` writes
docs/configuration.md and the service part of .env.example from there (the
part above ``ENV_MARKER``, the Compose stack's own variables, is kept as
written), and tests/test_config_docs.py fails when either file and the code
disagree, naming the command to run.
"""

from __future__ import annotations

import json
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any

from pydantic import BaseModel, SecretStr

from service.core.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
COMMAND = "divconq config-docs"
ENV_MARKER = (
    f"# Everything below is generated from service/core/settings.py by `{COMMAND}`:\n"
    "# edit the Field descriptions there, not these lines."
)


@dataclass(frozen=True)
class Setting:
    env: str
    default: str  # as an environment variable spells it; "" = unset
    description: str


@dataclass(frozen=True)
class Group:
    title: str
    about: str
    settings: list[Setting]


def env_value(value: Any) -> str:
    """A default as the environment variable that restores it is written."""
    if value is None:
        return ""
    if isinstance(value, SecretStr):
        return value.get_secret_value()
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Enum):
        return str(value.value)
    if isinstance(value, Path):
        home = str(Path.home())
        text = str(value)
        return "~" + text[len(home) :] if text.startswith(home) else text
    if isinstance(value, list | dict | tuple):
        return json.dumps(_plain(value))
    return str(value)


def _plain(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, SecretStr):
        return value.get_secret_value()
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def _nested(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    return None


def groups(model: type[BaseModel] = Settings) -> list[Group]:
    """The settings in declaration order: the top level first, then one group per
    nested model (``DIVCONQ_<FIELD>__*``)."""
    top: list[Setting] = []
    nested: list[Group] = []
    for name, field in model.model_fields.items():
        env = f"DIVCONQ_{name.upper()}"
        sub = _nested(field.annotation)
        if sub is not None:
            about = (sub.__doc__ or "").strip().splitlines()[0] if sub.__doc__ else ""
            nested.append(Group(f"{env}__*", about, list(_fields(sub, f"{env}__"))))
            continue
        default = field.get_default(call_default_factory=True)
        top.append(Setting(env, env_value(default), field.description or ""))
    return [
        Group("Service", "the top level of `Settings`: server, limits, modes, keys.", top),
        *nested,
    ]


def _fields(model: type[BaseModel], prefix: str) -> Iterator[Setting]:
    for name, field in model.model_fields.items():
        default = field.get_default(call_default_factory=True)
        yield Setting(f"{prefix}{name.upper()}", env_value(default), field.description or "")


def undocumented() -> list[str]:
    return [s.env for g in groups() for s in g.settings if not s.description.strip()]


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def render_markdown() -> str:
    out = [
        "# Configuration",
        "",
        f"Generated from `service/core/settings.py` by `{COMMAND}`: edit the `Field`",
        "descriptions there, not this page (a fast test fails when the two disagree).",
        "",
        "Every setting is an environment variable with the prefix `DIVCONQ_`; nested",
        "groups use `__` (`DIVCONQ_SOLVER__MODEL` is `Settings.solver.model`). An empty",
        "value means unset; booleans are `true`/`false`; lists and maps are JSON.",
        "`.env.example` lists them all with their defaults, ready to copy to `.env`",
        "(`docker compose` reads it). `DIVCONQ_SOLVERS__<NAME>__<FIELD>` adds solver",
        "profiles with the fields of `DIVCONQ_SOLVER__*` ([api.md](api.md)).",
        "",
    ]
    for group in groups():
        out += (
            [f"## {group.title}", "", group.about, ""] if group.about else [f"## {group.title}", ""]
        )
        out += ["| variable | default | meaning |", "| --- | --- | --- |"]
        for s in group.settings:
            default = f"`{_cell(s.default)}`" if s.default else "unset"
            out.append(f"| `{s.env}` | {default} | {_cell(s.description)} |")
        out.append("")
    return "\n".join(out)


def _comment(text: str) -> list[str]:
    return ["# " + line for line in textwrap.wrap(" ".join(text.split()), width=77)]


def render_env(current: str) -> str:
    """``current`` (the file as it is) with everything after ``ENV_MARKER`` regenerated."""
    head = current.split(ENV_MARKER, 1)[0] if ENV_MARKER in current else current.rstrip() + "\n\n"
    out = [head.rstrip("\n"), "", ENV_MARKER]
    rule = "# " + "=" * 77
    for group in groups():
        out += ["", rule, f"# {group.title}" + (f": {group.about}" if group.about else ""), rule]
        for s in group.settings:
            out += ["", *_comment(s.description), f"# {s.env}={s.default}"]
    return "\n".join(out) + "\n"


def generated() -> dict[Path, str]:
    """Each generated file and the text it should hold."""
    env = ROOT / ".env.example"
    current = env.read_text() if env.is_file() else ""
    return {
        ROOT / "docs" / "configuration.md": render_markdown(),
        env: render_env(current),
    }


def stale() -> list[Path]:
    return [p for p, text in generated().items() if not p.is_file() or p.read_text() != text]


def write() -> list[Path]:
    changed = stale()
    for path, text in generated().items():
        if path in changed:
            path.write_text(text)
    return changed
