"""The service as one CLI command reaches it: a running one, or one started in process.

Shared by ``divconq solve`` (``service/cli/main.py``) and ``divconq eval``
(``service/evaluation/cli.py``), which is why it is a module of its own: the
two command modules do not import each other.
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator

import httpx2

from service.cli import procs
from service.core.settings import Settings


@contextlib.contextmanager
def in_process_server(settings: Settings) -> Iterator[str]:
    """Run the service on a free loopback port for one CLI call.

    Leaving the block runs the app's lifespan shutdown to its end, which
    closes the decomposer (and its vLLM engine) before the interpreter exits.
    """
    from service.api.app import create_app

    sock = procs.bound_socket()
    port = int(sock.getsockname()[1])
    settings = settings.model_copy(update={"host": "127.0.0.1", "port": port})
    with procs.serve_in_thread(
        create_app(settings), sock, keep_alive_s=settings.keep_alive_s
    ) as url:
        yield url
    # Finalize the engine's objects now, while the interpreter is whole.
    gc.collect()


# One readiness probe's own limit. /readyz answers at once, so a probe that
# takes longer was lost (one was, once, in CI: the client then waited out its
# 600 s read timeout); the next probe, a second later, gets the answer.
PROBE_TIMEOUT_S = 5.0


def wait_ready(client: httpx2.Client, url: str, timeout_s: float) -> None:
    """Poll ``url``/readyz until the service is ready, or exit naming its last state."""
    last = "no answer"

    def ready() -> bool:
        nonlocal last
        try:
            resp = client.get(f"{url}/readyz", timeout=PROBE_TIMEOUT_S)
        except httpx2.TransportError as exc:
            last = type(exc).__name__
            return False
        if resp.status_code == 200:
            return True
        last = str(resp.json().get("decomposer", {}).get("state", resp.text))
        if last.startswith("failed"):
            raise RuntimeError(last)
        return False

    try:
        procs.wait_until(ready, timeout_s=timeout_s, what=url, interval_s=1.0)
    except (RuntimeError, TimeoutError):
        raise SystemExit(f"service at {url} did not become ready: {last}") from None
