"""Command line: serve, prepare-model, solve, eval and distill.

``python -m service <command>`` or the ``divconq`` console script. vLLM starts
its engine core in a spawned process, so every entry point that can build the
engine runs behind a ``__main__`` guard (see ``service/__main__.py``).
"""

from __future__ import annotations

import argparse
import ipaddress
import logging
import os
import socket
from collections.abc import Sequence
from typing import Any

from pydantic import ValidationError
from pydantic_settings import SettingsError

from service.cli import procs
from service.core.settings import Settings
from service.observability.logs import configure_logging

log = logging.getLogger("divconq")


def _secrets(settings: Settings) -> list[str]:
    keys = [
        settings.solver.api_key,
        settings.decomposer.api_key,
        settings.redis_url,
        *(k.key for k in settings.api_keys),
    ]
    return [k.get_secret_value() for k in keys if k is not None]


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to anything


def check_exposure(settings: Settings) -> None:
    """Secure by default: no keys on a non-loopback address is refused, unless allowed."""
    if settings.api_keys or _loopback(settings.host):
        return
    where = f"{settings.host}:{settings.port}"
    if not settings.allow_unauthenticated:
        raise SystemExit(
            f"divconq: refusing to serve on {where} without API keys: set DIVCONQ_API_KEYS "
            "(a JSON list of keys, docs/tenancy.md), bind a loopback address "
            "(DIVCONQ_HOST=127.0.0.1), or set DIVCONQ_ALLOW_UNAUTHENTICATED=true"
        )
    log.warning(
        "serving without API keys on a non-loopback address "
        "(DIVCONQ_ALLOW_UNAUTHENTICATED=true): anyone who reaches %s can use the solver",
        where,
    )


def settings_error(exc: Exception) -> str:
    """One line naming the setting(s) that failed to validate."""
    if not isinstance(exc, ValidationError):
        # pydantic-settings: a value that is not the JSON its field needs.
        return f"divconq: invalid settings: {exc}"
    parts = []
    for err in exc.errors():
        loc = [str(p) for p in err.get("loc", ())]
        name = "DIVCONQ_" + loc[0].upper() if loc else "settings"
        where = "".join(f"[{p}]" if p.isdigit() else f".{p}" for p in loc[1:])
        msg = str(err.get("msg", "invalid")).removeprefix("Value error, ")
        parts.append(f"{name}{where}: {msg}")
    return "divconq: invalid settings: " + "; ".join(parts)


def _listening_socket(args: argparse.Namespace, settings: Settings) -> socket.socket:
    """The socket the service accepts on: handed over (``--fd``), or bound here.

    Bound before the app starts so that it can be closed in the vLLM engine
    core, which is forked later (service/embedded/engine_process.py).
    """
    if args.fd is not None:
        return socket.socket(fileno=args.fd)
    return procs.bound_socket(settings.host, settings.port)


def cmd_serve(args: argparse.Namespace, settings: Settings) -> int:
    from service.observability import trace_setup

    # Before the app's modules are imported: OpenTelemetry's propagation module
    # loads OTEL_PROPAGATORS when imported, and raises on a name it cannot find.
    if (problem := trace_setup.config_problem()) is not None:
        raise SystemExit(f"divconq: {problem}")

    import uvicorn

    from service.api.app import create_app
    from service.cli.ledger_cmds import preflight
    from service.embedded.engine_process import close_in_forked_children
    from service.tenancy.redis_store import check_reachable

    updates: dict[str, Any] = {}
    if args.host is not None:
        updates["host"] = args.host
    if args.port is not None:
        updates["port"] = args.port
    settings = settings.model_copy(update=updates)
    if args.fd is None:
        check_exposure(settings)
    if settings.redis_url is not None:
        problem = check_reachable(
            settings.redis_url.get_secret_value(), settings.limits.store_timeout_s * 4
        )
        if problem:
            raise SystemExit(f"divconq: DIVCONQ_REDIS_URL: {problem}")
    if (problem := preflight(settings)) is not None:
        raise SystemExit(f"divconq: {problem}")
    sock = _listening_socket(args, settings)
    if args.fd is not None:
        # A handed-over socket: what it is bound to is what is exposed.
        host, port = sock.getsockname()[:2]
        check_exposure(settings.model_copy(update={"host": host, "port": port}))
    close_in_forked_children(sock)
    config = uvicorn.Config(
        create_app(settings, server_gc=True),
        log_level=settings.log_level,
        # Our JSON handler on the root logger (configure_logging) formats uvicorn too.
        log_config=None,
        timeout_graceful_shutdown=30,
        # Longer than the balancer's idle timeout: it, not we, closes idle connections.
        timeout_keep_alive=settings.keep_alive_s,
    )
    log.info(f"listening on {procs.url_of(sock)}")
    uvicorn.Server(config).run(sockets=[sock])
    return 0


def cmd_prepare_model(args: argparse.Namespace, settings: Settings) -> int:
    """The base checkpoint, then the one the service serves: the distilled weights merged in."""
    from pathlib import Path

    from service.core.settings import SHIPPED_ADAPTER, shipped_adapters
    from service.embedded.engine_config import local_hardware
    from service.embedded.model_prep import prepare_distilled_model, prepare_embedded_model

    base = prepare_embedded_model(settings.embedded_model_dir, force=args.force)
    print(f"base:      {base}")
    shipped = shipped_adapters().get(SHIPPED_ADAPTER)
    if shipped is not None:
        # In the dtype the engine resolves to on this machine, as `serve` does.
        hw = local_hardware(settings.decomposer)
        merged = prepare_distilled_model(
            base,
            Path(shipped),
            dtype=hw.dtype,
            vocabulary=settings.decomposer.vocabulary,
            force=args.force,
        )
        print(f"distilled: {merged}")
    return 0


def cmd_config_docs(args: argparse.Namespace, settings: Settings) -> int:
    from service.cli import config_docs

    missing = config_docs.undocumented()
    if missing:
        raise SystemExit(f"settings without a Field description: {', '.join(missing)}")
    if args.check:
        stale = config_docs.stale()
        for path in stale:
            print(f"out of date: {path} (run `{config_docs.COMMAND}`)")
        return 1 if stale else 0
    for path in config_docs.write():
        print(f"wrote {path}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from service.cli.ledger_cmds import add_parser as add_usage
    from service.cli.solve import add_parser as add_solve
    from service.distill.parser import add_parser as add_distill
    from service.evaluation.cli import add_parser as add_eval

    parser = argparse.ArgumentParser(prog="divconq", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    add_distill(sub)

    serve = sub.add_parser("serve", help="run the HTTP service")
    serve.add_argument("--host", help="bind address; unset = DIVCONQ_HOST, else 127.0.0.1")
    serve.add_argument("--port", type=int, help="port, 0 for any; unset = DIVCONQ_PORT, else 8000")
    serve.add_argument(
        "--fd",
        type=int,
        help="serve on this already bound TCP socket, inherited from the caller "
        "(a supervisor's or the tests'); --host and --port are then ignored",
    )
    serve.set_defaults(func=cmd_serve)

    prep = sub.add_parser("prepare-model", help="convert the embedded GGUF model once")
    prep.add_argument("--force", action="store_true", help="rebuild even if cached")
    prep.set_defaults(func=cmd_prepare_model)

    add_solve(sub)

    add_eval(sub)

    docs = sub.add_parser(
        "config-docs",
        help="write docs/configuration.md and .env.example from the settings' descriptions",
    )
    docs.add_argument(
        "--check",
        action="store_true",
        help="only report whether they are up to date (exit 1 if not)",
    )
    docs.set_defaults(func=cmd_config_docs)
    add_usage(sub)
    _show_defaults(parser)
    return parser


def _show_defaults(parser: argparse.ArgumentParser) -> None:
    """Every option's help ends with its default (argparse's own formatter)."""
    parser.formatter_class = argparse.ArgumentDefaultsHelpFormatter
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                _show_defaults(sub)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # vLLM logs to stdout by default; stdout is for command output (solve --json).
    os.environ.setdefault("VLLM_LOGGING_STREAM", "ext://sys.stderr")
    if args.command in ("solve", "eval"):
        os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
    if args.command == "serve":
        # vLLM's frontend loggers then propagate to our JSON handler.
        os.environ.setdefault("VLLM_CONFIGURE_LOGGING", "0")
    try:
        settings = Settings()
    except (ValidationError, SettingsError) as exc:
        raise SystemExit(settings_error(exc)) from None
    configure_logging(settings.log_level, _secrets(settings))
    return int(args.func(args, settings))
