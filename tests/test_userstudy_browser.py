"""A real browser session: `streamlit run userstudy/app.py` driven by Playwright on Debian's Chromium.

Screenshots land in test-artifacts/ (gitignored): userstudy.png (a trial), userstudy-complete.png.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest

from retrievegan.study.store import Store
from userstudy_support import shared_root, study_config, tiny_study

CHROMIUM = Path("/usr/bin/chromium")
REPO = Path(__file__).resolve().parents[1]
ARTIFACTS = REPO / "test-artifacts"
ADMIN_SECRET = "browser-test-admin-secret"

pytestmark = [
    pytest.mark.browser,
    # CI (.ci/run) installs Chromium and sets RETRIEVEGAN_REQUIRE_BROWSER=1: there a missing browser fails
    pytest.mark.skipif(not CHROMIUM.exists() and os.environ.get("RETRIEVEGAN_REQUIRE_BROWSER") != "1",
                       reason="needs Debian's Chromium at /usr/bin/chromium (apt-get install chromium; "
                              ".ci/run installs it)"),
]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str, Path]]:
    """(base URL, database URL, log file) of a running `streamlit run` on a loopback port."""
    root = tmp_path_factory.mktemp("userstudy-browser")
    study_dir = tiny_study(shared_root(tmp_path_factory), study_config(trials_per_pair=2, catch_trials=2, min_response_ms=300))
    db_url = f"sqlite:///{root / 'study.sqlite'}"
    cwd = root / "server"  # streamlit reads .streamlit/secrets.toml from its working directory
    (cwd / ".streamlit").mkdir(parents=True)
    (cwd / ".streamlit" / "secrets.toml").write_text(f'admin_secret = "{ADMIN_SECRET}"\n', encoding="utf-8")
    port = _free_port()
    log = root / "streamlit.log"
    env = {**os.environ, "RETRIEVEGAN_STUDY_DIR": "", "RETRIEVEGAN_STUDY_DB_URL": ""}
    cmd = [sys.executable, "-m", "streamlit", "run", str(REPO / "userstudy" / "app.py"),
           "--server.headless", "true", "--server.address", "127.0.0.1", "--server.port", str(port),
           "--browser.gatherUsageStats", "false", "--server.fileWatcherType", "none",
           "--global.developmentMode", "false", "--client.toolbarMode", "minimal",
           "--", "--study-dir", str(study_dir), "--db-url", db_url]
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"{base}/_stcore/health", timeout=2) as response:
                    if response.read().strip() == b"ok":
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"streamlit did not start:\n{log.read_text(errors='replace')}")
            time.sleep(0.3)
        yield base, db_url, log
    finally:
        os.killpg(proc.pid, signal.SIGTERM)  # the server this fixture started, and only it
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@pytest.fixture(scope="module")
def browser():  # noqa: ANN201
    if not CHROMIUM.exists():
        pytest.fail("RETRIEVEGAN_REQUIRE_BROWSER=1 but /usr/bin/chromium is missing (apt-get install chromium)")
    if os.environ.get("RETRIEVEGAN_REQUIRE_BROWSER") == "1":
        from playwright import sync_api
    else:
        sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright package is not installed")
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True,
            args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-extensions",
                  "--disable-default-apps", "--metrics-recording-only", "--mute-audio"])
        try:
            yield chromium
        finally:
            chromium.close()


def settle(page) -> None:  # noqa: ANN001
    """Wait until the script run is over and no element on the page is stale (left from the last run)."""
    page.wait_for_function("!document.querySelector('[data-testid=\"stStatusWidget\"]') && "
                           "document.querySelectorAll('[data-stale=\"true\"]').length === 0")


def test_full_session_in_chromium(server: tuple[str, str, Path], browser) -> None:  # noqa: ANN001
    base, db_url, log = server
    ARTIFACTS.mkdir(exist_ok=True)
    page = browser.new_page(viewport={"width": 1100, "height": 1000})
    dialogs: list[str] = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    page.set_default_timeout(20_000)
    try:
        # a participant id carrying HTML is refused, shown as nothing, and runs no script
        page.goto(f"{base}/?pid={quote('<img src=x onerror=alert(1)>')}")
        page.get_by_text("The participant id in your link is not valid").wait_for()
        assert page.locator("img[src='x']").count() == 0 and not dialogs
        assert "onerror" not in page.locator("[data-testid='stMain']").inner_text()

        page.goto(f"{base}/?PROLIFIC_PID=browser_participant_1")
        page.get_by_role("button", name="I agree and want to take part").click()
        progress = page.get_by_text(re.compile(r"^Trial 1 of \d+$"))
        progress.wait_for()
        total = int(progress.inner_text().rsplit(" ", 1)[1])
        assert total == 3 * 2 + 2
        page.wait_for_function("document.querySelectorAll('[data-testid=\"stImage\"] img').length == 2 && "
                               "[...document.querySelectorAll('[data-testid=\"stImage\"] img')].every(i => i.complete)")
        page.screenshot(path=str(ARTIFACTS / "userstudy.png"), full_page=True)
        for i in range(total):
            page.get_by_text(f"Trial {i + 1} of {total}", exact=True).wait_for()
            settle(page)
            page.wait_for_timeout(400)  # a person looks before clicking (faster clicks are ignored)
            button = page.get_by_role("button", name=f"The {'left' if i % 2 else 'right'} set is more compatible")
            if i == 1:
                button.dblclick()  # a double click stores one answer and does not answer the next trial
            else:
                button.click()
            if i + 1 < total:
                page.get_by_text(f"Trial {i + 2} of {total}", exact=True).wait_for()
            if i == 2:
                page.reload()  # a reload resumes at the next unanswered trial
                page.get_by_text(f"Trial {i + 2} of {total}", exact=True).wait_for()
        page.get_by_text("Your completion code:").wait_for()
        code = page.locator("[data-testid='stCode'] code").inner_text().strip()
        assert re.fullmatch(r"[0-9A-F]{8}", code)
        page.screenshot(path=str(ARTIFACTS / "userstudy-complete.png"), full_page=True)

        store = Store(db_url)
        rows = store.export_responses()
        plan = store.get_plan("browser_participant_1")
        store.dispose()
        assert plan is not None and len(rows) == total == len(plan.trials)
        assert rows["trial_id"].tolist() == [t.trial_id for t in plan.trials]  # in plan order, none twice
        assert rows["chosen_side"].tolist() == ["left" if i % 2 else "right" for i in range(total)]
        assert rows["id_source"].eq("prolific").all()
        assert (rows["response_time_ms"] >= 300).all()

        # admin page: refuses a wrong secret, then shows progress and exports the CSV
        page.goto(f"{base}/?page=admin")
        secret = page.get_by_label("Admin secret")
        secret.fill("not-the-secret-at-all")
        secret.press("Enter")
        page.get_by_text("Wrong admin secret.").wait_for()
        secret.fill(ADMIN_SECRET)
        secret.press("Enter")
        with page.expect_download() as download:
            page.get_by_role("button", name="Download raw responses (CSV)").click()
        csv_text = Path(download.value.path()).read_text(encoding="utf-8")
        assert csv_text.count("browser_participant_1") == total
        assert not dialogs
    except Exception:
        page.screenshot(path=str(ARTIFACTS / "userstudy-failure.png"), full_page=True)
        print(log.read_text(errors="replace")[-5000:])
        raise
    finally:
        page.close()
