"""A real browser: `retrievegan study-serve` (the documented launch) driven by Playwright on Debian's Chromium.

Covers what participants, administrators and attackers do: broken bundles refuse the start (or, broken
under a running server, give a generic page without traceback or path); a whole study on a desktop, on
a phone (390x844: both sets side by side on one screen, the question on screen at each trial start) and
with the keyboard only; admin back-off. Screenshots land in test-artifacts/ (gitignored).
"""

from __future__ import annotations

import json
import os
import re
import shutil
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
from userstudy_support import shared_root, study_config, tiny_study

from retrievegan.study.store import Store

CHROMIUM = Path("/usr/bin/chromium")
REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "test-artifacts"
ADMIN_SECRET = "Br0wser-test_admin-secret-9fKq2"
RETRIEVEGAN = Path(sys.executable).with_name("retrievegan")
TRACE_MARKERS = ("Traceback", 'File "', ".py", "Error:", "/tmp/", str(REPO))

pytestmark = [
    pytest.mark.slow,
    pytest.mark.browser,
    # CI (.ci/run) installs Chromium and sets RETRIEVEGAN_REQUIRE_BROWSER=1: there a missing browser fails
    pytest.mark.skipif(
        not CHROMIUM.exists() and os.environ.get("RETRIEVEGAN_REQUIRE_BROWSER") != "1",
        reason="needs Debian's Chromium at /usr/bin/chromium (apt-get install chromium; .ci/run installs it)",
    ),
]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _app_copy(root: Path) -> Path:
    """The repository's userstudy/ (app.py, consent.md, .streamlit/config.toml) with a test secrets file, so a
    developer's own userstudy/.streamlit/secrets.toml is neither read nor touched."""
    app_dir = root / "userstudy"
    shutil.copytree(REPO / "userstudy", app_dir, ignore=shutil.ignore_patterns("secrets.toml", "data", "__pycache__"))
    (app_dir / ".streamlit" / "secrets.toml").write_text(f'admin_secret = "{ADMIN_SECRET}"\n', encoding="utf-8")
    return app_dir / "app.py"


def _env(root: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RETRIEVEGAN_STUDY_")}
    env["HOME"] = str(root)  # no ~/.streamlit of the machine
    return env


def _serve(app: Path, study: Path, db_url: str, port: int, log: Path, root: Path, init: bool) -> subprocess.Popen:
    cmd = [
        str(RETRIEVEGAN),
        "study-serve",
        "--app",
        str(app),
        "--study-dir",
        str(study),
        "--db-url",
        db_url,
        "--address",
        "127.0.0.1",
        "--port",
        str(port),
        *(["--init"] if init else []),
    ]
    with open(log, "wb") as out:
        return subprocess.Popen(
            cmd, cwd=root, env=_env(root), stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)  # the server this test started, and only it
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@pytest.fixture(scope="module")
def bundle_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_study(
        shared_root(tmp_path_factory), study_config(trials_per_pair=2, catch_trials=2, min_response_ms=300)
    )


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, bundle_dir: Path) -> Iterator[tuple[str, str, Path, Path]]:
    """(base URL, database URL, server log, served bundle folder) of `retrievegan study-serve` on loopback."""
    root = tmp_path_factory.mktemp("userstudy-browser")
    study = root / "study"
    shutil.copytree(bundle_dir, study)  # a copy: one test breaks it under the running server
    app = _app_copy(root)
    db_url = f"sqlite:///{root / 'data' / 'study.sqlite'}"
    port = _free_port()
    log = root / "server.log"
    proc = _serve(app, study, db_url, port, log, root, init=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                with urllib.request.urlopen(f"{base}/_stcore/health", timeout=2) as response:
                    if response.read().strip() == b"ok":
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"the study server did not start:\n{log.read_text(errors='replace')}")
            time.sleep(0.3)
        yield base, db_url, log, study
    finally:
        _stop(proc)


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
            executable_path=str(CHROMIUM),
            headless=True,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
                "--disable-extensions",
                "--disable-default-apps",
                "--disable-quic",
                "--metrics-recording-only",
                "--mute-audio",
            ],
        )
        try:
            yield chromium
        finally:
            chromium.close()


def settle(page) -> None:  # noqa: ANN001
    """Wait until the script run is over and no element on the page is stale (left from the last run)."""
    page.wait_for_function(
        "!document.querySelector('[data-testid=\"stStatusWidget\"]') && "
        "document.querySelectorAll('[data-stale=\"true\"]').length === 0"
    )


def wait_trial(page, i: int, total: int) -> None:  # noqa: ANN001
    page.get_by_text(f"Trial {i} of {total}", exact=True).wait_for()
    settle(page)
    page.wait_for_function(
        "document.querySelectorAll('[data-testid=\"stImage\"] img').length == 2 && "
        "[...document.querySelectorAll('[data-testid=\"stImage\"] img')].every(i => i.complete)"
    )


def choice(page, side: str):  # noqa: ANN001, ANN201
    """The answer button of one side (not the image's fullscreen button, whose name holds the alt text)."""
    return page.get_by_role("button", name=re.compile(rf"^{side} set"))


def main_text(page) -> str:  # noqa: ANN001
    return page.locator("[data-testid='stMain']").inner_text()


def stored(db_url: str, pid: str) -> tuple:
    store = Store(db_url)
    try:
        rows = store.export_responses()
        return rows[rows["participant_id"] == pid], store.get_plan(pid)
    finally:
        store.dispose()


def failure_screenshot(page, name: str, log: Path) -> None:  # noqa: ANN001
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"userstudy-{name}-failure.png"), full_page=True)
    print(log.read_text(errors="replace")[-5000:])


# --- broken bundles ----------------------------------------------------------------------------------


def _broken(bundle_dir: Path, root: Path, how: str) -> Path:
    study = root / how.replace(" ", "-")
    shutil.copytree(bundle_dir, study)
    data = json.loads((study / "trials.json").read_text())
    if how == "top-level list":
        (study / "trials.json").write_text(json.dumps([data]))
    elif how == "empty graphs":
        (study / "trials.json").write_text(json.dumps({**data, "graphs": {}}))
    elif how == "unknown patch id":
        method = data["methods"][0]
        data["pairs"][method][0]["reference"][0] = 999999
        (study / "trials.json").write_text(json.dumps(data))
    elif how == "truncated patches.npy":
        raw = (study / "patches.npy").read_bytes()
        (study / "patches.npy").write_bytes(raw[: len(raw) - 4096])
    elif how == "missing patches.npy":
        (study / "patches.npy").unlink()
    elif how == "malformed trials.json":
        (study / "trials.json").write_text('{"format_version": 2, "graphs": ')
    elif how == "wrong types":
        (study / "trials.json").write_text(json.dumps({**data, "plan": {**data["plan"], "trials_per_pair": "2"}}))
    elif how == "missing trials.json":
        (study / "trials.json").unlink()
    return study


BROKEN = {  # the four tracebacks first, then the cases that printed server paths
    "top-level list": ("trials.json", "(top level): expected an object, got list"),
    "empty graphs": ("trials.json", ".image_id): scene graph"),
    "unknown patch id": ("trials.json", "]): patch id 999999 is not in patch_ids"),
    "truncated patches.npy": ("patches.npy", "not a readable .npy array"),
    "missing patches.npy": ("patches.npy", "bundle patches not found"),
    "malformed trials.json": ("trials.json", "malformed JSON at line 1"),
    "wrong types": ("trials.json", "(plan.trials_per_pair): expected an integer"),
    "missing trials.json": ("trials.json", "study bundle not found"),
}


def test_broken_bundles_refuse_to_start(bundle_dir: Path, tmp_path: Path) -> None:
    app = _app_copy(tmp_path)
    for how, (name, message) in BROKEN.items():
        study = _broken(bundle_dir, tmp_path, how)
        port = _free_port()
        log = tmp_path / f"{study.name}.log"
        proc = _serve(app, study, f"sqlite:///{tmp_path / 'db.sqlite'}", port, log, tmp_path, init=True)
        try:
            code = proc.wait(timeout=120)
        finally:
            _stop(proc)
        text = log.read_text(errors="replace")
        assert code == 2, (how, text)
        assert f"{study / name}" in text and message in text, (how, text)
        assert "Traceback" not in text and "serving http" not in text, (how, text)
        with pytest.raises(OSError):  # nothing listens
            urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=2)
    assert not (tmp_path / "db.sqlite").exists()  # refused before the database was created


def test_missing_database_refuses_to_start_without_init(bundle_dir: Path, tmp_path: Path) -> None:
    app = _app_copy(tmp_path)
    log = tmp_path / "noinit.log"
    proc = _serve(
        app, bundle_dir, f"sqlite:///{tmp_path / 'data' / 'x.sqlite'}", _free_port(), log, tmp_path, init=False
    )
    assert proc.wait(timeout=120) == 2
    text = log.read_text()
    assert f"no study database at {tmp_path / 'data' / 'x.sqlite'}" in text and "--init" in text
    assert not (tmp_path / "data").exists()


def test_bundle_broken_under_a_running_server_gives_a_generic_page(server, browser) -> None:  # noqa: ANN001
    base, _db_url, log, study = server
    page = browser.new_page(viewport={"width": 1100, "height": 900})
    original = (study / "trials.json").read_bytes()
    try:
        for how in ("top-level list", "empty graphs", "unknown patch id"):
            (study / "trials.json").write_bytes(original)
            broken = _broken(study, study.parent / "tmp-broken", how)
            shutil.copyfile(broken / "trials.json", study / "trials.json")
            shutil.rmtree(broken.parent)
            page.goto(f"{base}/?pid=broken_bundle_visitor")
            page.get_by_text("The study is not available at the moment").wait_for()
            text = main_text(page)
            assert re.search(r"reference [0-9a-f]{8}", text)
            assert not any(marker in text for marker in TRACE_MARKERS), text
            assert page.get_by_role("button").filter(has_text="I agree").count() == 0
    except Exception:
        failure_screenshot(page, "broken", log)
        raise
    finally:
        (study / "trials.json").write_bytes(original)
        page.close()
    assert "the study cannot start (reference" in log.read_text()  # the details went to the server log


# --- participants --------------------------------------------------------------------------------------


def test_full_session_on_a_desktop(server, browser) -> None:  # noqa: ANN001
    base, db_url, log, _ = server
    ARTIFACTS.mkdir(exist_ok=True)
    page = browser.new_page(viewport={"width": 1100, "height": 1000})
    dialogs: list[str] = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    page.set_default_timeout(20_000)
    try:
        # a participant id carrying HTML is refused, shown as nothing, and runs no script
        page.goto(f"{base}/?pid={quote('<img src=x onerror=alert(1)>')}")
        page.get_by_text("The link you opened is not valid").wait_for()
        assert page.locator("img[src='x']").count() == 0 and not dialogs
        assert "onerror" not in main_text(page)

        page.goto(f"{base}/?PROLIFIC_PID=browser_participant_1")
        page.get_by_role("button", name="I agree and want to take part").wait_for()
        assert main_text(page).count("Patch compatibility study") == 1  # the consent title once
        page.get_by_role("button", name="I agree and want to take part").click()
        progress = page.get_by_text(re.compile(r"^Trial 1 of \d+$"))
        progress.wait_for()
        total = int(progress.inner_text().rsplit(" ", 1)[1])
        assert total == 3 * 2 + 2
        wait_trial(page, 1, total)
        images = page.locator("[data-testid='stImage'] img")
        boxes = [images.nth(k).bounding_box() for k in range(2)]
        assert boxes[0]["y"] == boxes[1]["y"] and boxes[0]["x"] + boxes[0]["width"] <= boxes[1]["x"]  # side by side
        for box in boxes:  # a set image is 2 tiles of 104 px + 3 gaps of 8 px at full size: tiles >= 96 px
            assert box["width"] * 104 / 232 >= 96
        alts = [images.nth(k).get_attribute("alt") for k in range(2)]
        assert alts[0].startswith("Left set: 1. ") and alts[1].startswith("Right set: 1. ")
        page.screenshot(path=str(ARTIFACTS / "userstudy.png"), full_page=True)
        for i in range(total):
            wait_trial(page, i + 1, total)
            page.wait_for_timeout(400)  # a person looks before clicking (faster clicks are ignored)
            button = choice(page, "Left" if i % 2 else "Right")
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

        rows, plan = stored(db_url, "browser_participant_1")
        assert plan is not None and len(rows) == total == len(plan.trials)
        assert rows["trial_id"].tolist() == [t.trial_id for t in plan.trials]  # in plan order, none twice
        assert rows["chosen_side"].tolist() == ["left" if i % 2 else "right" for i in range(total)]
        assert rows["id_source"].eq("prolific").all() and rows["first_shown_at"].notna().all()
        assert (rows["response_time_ms"] >= 300).all()

        # the same participant id in another browser (no token in its URL): finished, but no code
        other = browser.new_page()
        other.goto(f"{base}/?PROLIFIC_PID=browser_participant_1")
        other.get_by_text("The completion code is shown in the browser window").wait_for()
        assert code not in main_text(other) and other.locator("[data-testid='stCode']").count() == 0
        other.close()
        assert not dialogs
    except Exception:
        failure_screenshot(page, "desktop", log)
        raise
    finally:
        page.close()


def _in_view(box: dict, width: int, height: int) -> bool:
    return (
        box["x"] >= 0
        and box["y"] >= 0
        and box["x"] + box["width"] <= width + 0.5
        and box["y"] + box["height"] <= height + 0.5
    )


def test_phone_shows_both_sets_on_one_screen(server, browser) -> None:  # noqa: ANN001
    base, db_url, log, _ = server
    ARTIFACTS.mkdir(exist_ok=True)
    width, height = 390, 844
    context = browser.new_context(
        viewport={"width": width, "height": height}, device_scale_factor=3, is_mobile=True, has_touch=True
    )
    page = context.new_page()
    page.set_default_timeout(20_000)
    try:
        page.goto(f"{base}/?pid=phone_participant")
        page.get_by_role("button", name="I agree and want to take part").tap()
        page.get_by_text(re.compile(r"^Trial 1 of \d+$")).wait_for()
        total = int(page.get_by_text(re.compile(r"^Trial 1 of \d+$")).inner_text().rsplit(" ", 1)[1])
        for i in range(total):
            wait_trial(page, i + 1, total)
            page.wait_for_function("document.activeElement && document.activeElement.id === 'trial-question'")
            page.wait_for_timeout(150)
            question = page.locator("#trial-question").bounding_box()
            images = page.locator("[data-testid='stImage'] img")
            sets = [images.nth(k).bounding_box() for k in range(2)]
            buttons = [choice(page, side).bounding_box() for side in ("Left", "Right")]
            if i == 0:
                page.screenshot(path=str(ARTIFACTS / "userstudy-phone.png"))
            assert _in_view(question, width, height), (i, question)  # each trial opens at its top
            assert sets[0]["y"] == sets[1]["y"] and sets[0]["x"] + sets[0]["width"] <= sets[1]["x"], sets
            for box in sets + buttons:  # both sets and both buttons on the one screen
                assert _in_view(box, width, height), (i, box)
            # scroll down as a person might before choosing: the next trial must open at its top again
            page.mouse.wheel(0, 400)
            page.wait_for_timeout(400)
            choice(page, "Left" if i % 2 else "Right").tap()
        page.get_by_text("Your completion code:").wait_for()
        rows, plan = stored(db_url, "phone_participant")
        assert plan is not None and len(rows) == len(plan.trials) == total
    except Exception:
        failure_screenshot(page, "phone", log)
        raise
    finally:
        context.close()


def test_keyboard_only_completion(server, browser) -> None:  # noqa: ANN001
    base, db_url, log, _ = server
    page = browser.new_page(viewport={"width": 1100, "height": 900})
    page.set_default_timeout(20_000)
    try:
        page.goto(f"{base}/?pid=keyboard_participant")
        agree = page.get_by_role("button", name="I agree and want to take part")
        agree.wait_for()
        settle(page)
        for _ in range(40):  # Tab until the agree button has the focus (nothing is clicked)
            page.keyboard.press("Tab")
            if page.evaluate(
                "document.activeElement && document.activeElement.tagName === 'BUTTON' && "
                "document.activeElement.innerText.includes('I agree')"
            ):
                break
        else:
            pytest.fail("Tab never reached the consent button")
        page.keyboard.press("Enter")
        page.get_by_text(re.compile(r"^Trial 1 of \d+$")).wait_for()
        total = int(page.get_by_text(re.compile(r"^Trial 1 of \d+$")).inner_text().rsplit(" ", 1)[1])
        for i in range(total):
            wait_trial(page, i + 1, total)
            page.wait_for_function("document.activeElement && document.activeElement.id === 'trial-question'")
            page.wait_for_timeout(400)
            page.keyboard.press("ArrowLeft" if i % 2 else "ArrowRight")
            if i + 1 < total:
                page.get_by_text(f"Trial {i + 2} of {total}", exact=True).wait_for()
        page.get_by_text("Your completion code:").wait_for()
        rows, plan = stored(db_url, "keyboard_participant")
        assert plan is not None and len(rows) == total
        assert rows["chosen_side"].tolist() == ["left" if i % 2 else "right" for i in range(total)]
    except Exception:
        failure_screenshot(page, "keyboard", log)
        raise
    finally:
        page.close()


# --- admin ---------------------------------------------------------------------------------------------


def test_admin_back_off_and_export(server, browser) -> None:  # noqa: ANN001
    base, _db_url, log, _ = server
    page = browser.new_page(viewport={"width": 1100, "height": 900})
    page.set_default_timeout(20_000)
    try:
        page.goto(f"{base}/?page=admin")
        secret = page.get_by_label("Admin secret")
        secret.fill("not-the-secret-at-all-not-it")
        secret.press("Enter")
        page.get_by_text("Wrong admin secret.").wait_for()
        secret.fill(ADMIN_SECRET)  # right away: the back-off holds even the right secret
        secret.press("Enter")
        page.get_by_text(re.compile(r"Too many wrong attempts: the next one is accepted in \d+ s")).wait_for()
        assert page.get_by_role("button", name="Download raw responses (CSV)").count() == 0
        page.wait_for_timeout(1200)
        secret.fill(ADMIN_SECRET)
        secret.press("Enter")
        with page.expect_download() as download:
            page.get_by_role("button", name="Download raw responses (CSV)").click()
        csv_text = Path(download.value.path()).read_text(encoding="utf-8")
        assert "browser_participant_1" in csv_text and "first_shown_at" in csv_text
    except Exception:
        failure_screenshot(page, "admin", log)
        raise
    finally:
        page.close()
    text = log.read_text(errors="replace")
    assert "failed admin login: attempt 1" in text
    assert ADMIN_SECRET not in text and "not-the-secret-at-all" not in text
