"""The dashboard in a real browser: Debian's Chromium, driven by Playwright.

Against the stack as real processes (four services and the gateway, sampling stats every
second) on real PostgreSQL. Every wait is Playwright's own (``expect``/``wait_for_*``
with a timeout), never a sleep. Screenshots go to ``test-output/dashboard/`` at the
repository's root (ignored by git).

Skipped, with one line, only when there is no Chromium; under CI (``CI`` set) a missing
Chromium fails instead, since ``.ci/run`` installs it.
"""

from __future__ import annotations

import json
import os
import shutil
import time
import uuid
from collections.abc import Iterator

import httpx
import pytest
from playwright.sync_api import Browser, ConsoleMessage, Page, expect, sync_playwright

from tests.conftest import API_KEY, BUILTIN_ROLES, ROOT, bearer
from tests.fleet import ProcessFleet

OUTPUT = ROOT / "test-output" / "dashboard"
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",  # as root, Chromium's sandbox refuses to start
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    # Without these Chromium keeps dialling Google's services on a closed network.
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
CARD_S = 6  # "within a few seconds": the page polls the cached health every 2 s


def chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    path = chromium()
    if path is None:
        if os.environ.get("CI"):
            pytest.fail("CI: no chromium on PATH; .ci/run installs Debian's chromium")
        pytest.skip("no Chromium found (Debian: apt-get install chromium)")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=path, headless=True, args=CHROMIUM_FLAGS
        )
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture(scope="module")
def fleet(
    database_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ProcessFleet]:
    logs = tmp_path_factory.mktemp("dashboard-browser")
    with ProcessFleet(
        database_env,
        logs,
        MULTI_DB_STATS_SAMPLE_S="1",
        MULTI_DB_HEALTH_REFRESH_MS="200",
    ).running() as running:
        yield running


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    opened = context.new_page()
    try:
        yield opened
    finally:
        context.close()


class Console:
    """What the page said on its console, and the errors it raised."""

    def __init__(self, page: Page) -> None:
        self.messages: list[str] = []
        self.errors: list[str] = []
        page.on("console", self._console)
        page.on("pageerror", lambda error: self.errors.append(str(error)))

    def _console(self, message: ConsoleMessage) -> None:
        self.messages.append(f"{message.type}: {message.text}")

    def policy_violations(self) -> list[str]:
        return [text for text in self.messages if "Content Security Policy" in text]


def sign_in(page: Page, kind: str, value: str) -> None:
    page.check(f'input[name="kind"][value="{kind}"]')
    page.fill("#credential", value)
    page.click("#sign-in-button")


def test_the_dashboard_shows_the_fleet_live(page: Page, fleet: ProcessFleet) -> None:
    console = Console(page)
    answer = page.goto(f"{fleet.gateway}/dashboard")
    assert answer is not None
    assert answer.status == 200
    assert "script-src 'self'" in answer.headers["content-security-policy"]
    expect(page.locator("#credential-form")).to_be_visible()
    expect(page.locator("#dashboard")).to_be_hidden()

    sign_in(page, "key", API_KEY)
    healthy = page.locator('.card[data-status="healthy"]')
    expect(healthy).to_have_count(len(BUILTIN_ROLES), timeout=15_000)
    for role in BUILTIN_ROLES:
        expect(page.locator(f'.card[data-role="{role}"] .badge')).to_have_text("healthy")
        expect(page.locator(f'.card[data-role="{role}"] dd.size')).to_contain_text("B")
    expect(page.locator("#summary")).to_have_text("4 / 4 healthy")
    # The credential stays in this tab: a reload shows the fleet without asking again.
    assert page.evaluate("() => sessionStorage.length") == 1
    page.reload()
    expect(healthy).to_have_count(len(BUILTIN_ROLES), timeout=15_000)
    expect(page.locator("#credential-form")).to_be_hidden()

    # Each card says when its role was last backed up: a backup started now shows, verified.
    started = httpx.post(
        f"{fleet.url('default')}/backups", headers={"X-API-Key": API_KEY}, timeout=10
    )
    assert started.status_code == 202, started.text
    backup = page.locator('.card[data-role="default"] dd.backup')
    expect(backup).to_contain_text("verified", timeout=30_000)
    expect(backup).to_contain_text("s ago")
    expect(page.locator('.card[data-role="analytics"] dd.backup')).to_contain_text("schedule off")

    # The audit panel lists an execute made just now (delivered in the background).
    request_id = f"browser-{uuid.uuid4().hex[:12]}"
    done = httpx.post(
        f"{fleet.gateway}/database/default/execute",
        json={"query": "SELECT 'seen in the browser' AS dashboard_probe"},
        headers={"X-API-Key": API_KEY, "X-Request-ID": request_id},
        timeout=10,
    )
    assert done.status_code == 200, done.text
    row = page.locator("#audit-rows tr", has_text=request_id)
    expect(row).to_have_count(1, timeout=20_000)
    expect(row).to_contain_text("dashboard_probe")
    expect(row.locator("td.outcome")).to_have_text("allowed")

    # Charts over the last 5 minutes (1 s steps): a canvas each, more than one point per role.
    page.select_option("#range", "300")
    expect(page.locator("#charts .chart canvas")).to_have_count(4, timeout=15_000)
    page.wait_for_function(
        """() => [...document.querySelectorAll('#charts .chart')]
                 .every((chart) => Number(chart.dataset.seriesPoints) > 1)""",
        timeout=30_000,
    )
    points = page.evaluate(
        "() => Object.fromEntries([...document.querySelectorAll('#charts .chart')]"
        ".map((chart) => [chart.id, Number(chart.dataset.seriesPoints)]))"
    )
    assert all(count > 1 for count in points.values()), points

    # A stopped service turns its card red within a few seconds, with the reason...
    fleet.stop("archive")
    stopped = time.monotonic()
    try:
        archive = page.locator('.card[data-role="archive"]')
        expect(archive).to_have_attribute("data-status", "unhealthy", timeout=CARD_S * 1000)
        timings = {"red_after_stop_s": round(time.monotonic() - stopped, 2)}
        expect(archive.locator(".problem")).to_contain_text("unreachable")
        expect(page.locator("#summary")).to_have_text("3 / 4 healthy")
        OUTPUT.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=OUTPUT / "dashboard-archive-down.png", full_page=True)
    finally:
        fleet.start("archive")
    # ... and green again after the restart.
    restarted = time.monotonic()
    expect(archive).to_have_attribute("data-status", "healthy", timeout=CARD_S * 1000)
    timings["green_after_restart_s"] = round(time.monotonic() - restarted, 2)
    # Beside the screenshots, for whoever reads them: how long the cards took to turn.
    (OUTPUT / "timings.json").write_text(json.dumps(timings) + "\n")
    expect(archive.locator(".problem")).to_have_text("", timeout=CARD_S * 1000)
    expect(healthy).to_have_count(len(BUILTIN_ROLES))
    page.screenshot(path=OUTPUT / "dashboard.png", full_page=True)

    assert console.errors == []
    assert console.policy_violations() == []


def test_without_admin_the_audit_panel_says_so(page: Page, fleet: ProcessFleet) -> None:
    console = Console(page)
    page.goto(f"{fleet.gateway}/dashboard")
    sign_in(page, "token", bearer("db:read")["Authorization"].removeprefix("Bearer "))
    expect(page.locator('.card[data-status="healthy"]')).to_have_count(
        len(BUILTIN_ROLES), timeout=15_000
    )
    expect(page.locator("#audit-note")).to_contain_text("needs the db:admin scope")
    expect(page.locator("#audit")).to_be_hidden()

    # A refused credential ends the session and says why.
    page.click("#sign-out")
    sign_in(page, "key", "not-a-key")
    expect(page.locator("#sign-in-error")).to_contain_text("refused", timeout=10_000)
    assert page.evaluate("() => sessionStorage.length") == 0
    assert console.errors == []
    assert console.policy_violations() == []


def test_a_credential_for_one_database_sees_that_database_only(
    page: Page, fleet: ProcessFleet
) -> None:
    """The page shows what the API gives it: the aggregates filter by the caller's scopes."""
    console = Console(page)
    page.goto(f"{fleet.gateway}/dashboard")
    sign_in(page, "token", bearer("db:read:analytics")["Authorization"].removeprefix("Bearer "))
    expect(page.locator('.card[data-role="analytics"][data-status="healthy"]')).to_have_count(
        1, timeout=15_000
    )
    expect(page.locator(".card")).to_have_count(1)
    expect(page.locator("#audit-note")).to_contain_text("needs the db:admin scope")
    # The history charts ask for the one database's history, and draw it.
    page.wait_for_function(
        "() => document.querySelectorAll('figure.chart').length > 0"
        " && [...document.querySelectorAll('figure.chart')]"
        ".every((chart) => Number(chart.dataset.points) > 0)",
        timeout=30_000,
    )
    expect(page.locator("#history-note")).to_have_text("")
    expect(page.locator(".card")).to_have_count(1)
    assert console.errors == []
    assert console.policy_violations() == []
