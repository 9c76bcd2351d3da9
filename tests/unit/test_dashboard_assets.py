"""The dashboard's files: everything the page loads is in the package, nothing from elsewhere,
and no API data is ever parsed as HTML."""

from __future__ import annotations

import re

from multidb_gateway.dashboard import ASSETS_PATH, PAGE, STATIC


def test_every_asset_the_page_loads_is_in_the_package() -> None:
    page = PAGE.read_text()
    loaded = re.findall(r'(?:src|href)="([^"]+)"', page)
    local = [url for url in loaded if url.startswith(f"{ASSETS_PATH}/")]
    assert len(local) == 4
    for url in local:
        assert (STATIC / url.removeprefix(f"{ASSETS_PATH}/")).is_file(), url
    # Nothing from another origin (the favicon is an empty data: URL, so none is fetched).
    assert set(loaded) - set(local) == {"data:,"}


def test_the_vendored_library_keeps_its_licence_and_origin() -> None:
    vendor = STATIC / "vendor" / "uplot"
    assert "MIT License" in (vendor / "LICENSE").read_text()
    readme = (vendor / "README.md").read_text()
    assert "1.6.32" in readme
    assert "npm" in readme


def test_the_script_never_writes_html() -> None:
    script = (STATIC / "dashboard.js").read_text()
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval("):
        assert sink not in script, sink
