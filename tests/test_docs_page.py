"""/docs and /redoc work offline: every asset the pages load is served by the
app itself (fastapi-offline's copies), none from a CDN."""

from __future__ import annotations

import re

import pytest

from tests.fakes import ScriptedSolver, serve, settings_for


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
async def test_docs_pages_load_every_asset_from_the_app(page: str) -> None:
    async with serve(settings_for(api_keys=["k"]), ScriptedSolver("ok")) as client:
        resp = await client.get(page)
        assets = re.findall(r"""(?:src|href|spec-url)=["']([^"']+)["']""", resp.text)
        assets += re.findall(r"""url: ?["']([^"']+)["']""", resp.text)  # the OpenAPI document
        fetched = {url: await client.get(url) for url in assets}
    assert resp.status_code == 200
    assert assets and "/openapi.json" in assets
    for url, asset in fetched.items():
        assert url.startswith("/"), f"{page} loads {url} from elsewhere"
        assert asset.status_code == 200 and asset.content, url
    scripts = [u for u in assets if u.endswith(".js")]
    assert scripts and all(len(fetched[u].content) > 100_000 for u in scripts)
