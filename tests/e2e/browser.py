"""A real browser on the running Airflow UI: Debian's chromium driven by Playwright, logged in as a person would.

The browser is the system's ``chromium`` (``make chromium`` installs it); Playwright never
downloads one. Screenshots go to ``BATCHSCORE_SCREENSHOTS`` when set (``make screenshots``
writes the documentation's pictures under docs/img), else beside the test session's scratch files.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = os.environ.get("BATCHSCORE_CHROMIUM", "/usr/bin/chromium")
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
VIEWPORT = {"width": 1440, "height": 1000}


def chromium_path() -> str:
    path = CHROMIUM if os.path.exists(CHROMIUM) else shutil.which("chromium")
    if not path:
        pytest.fail("the browser tests need Debian's chromium: run `make chromium` (or apt-get install chromium)")
    return path


def screenshot_dir(default: Path) -> Path:
    folder = Path(os.environ.get("BATCHSCORE_SCREENSHOTS") or default)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def log_in(page: Any, base: str, username: str, password: str) -> None:
    """Airflow's login form (SimpleAuthManager), then back on the UI's home page with its session cookie."""
    page.goto(f"{base}/auth/login/")
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", password)
    page.click("button[type=submit]")
    page.wait_for_url(lambda url: "/auth/" not in url, timeout=60_000)


def pick_date_time(page: Any, label: str, day: str, hour_minute: str) -> None:
    """Fill one of the trigger form's date-time pickers (``day`` as YYYY/MM/DD, UTC as the UI shows)."""
    field = page.locator("[data-scope=field][data-part=root]").filter(has_text=label)
    field.get_by_test_id("datetime-input").click()
    popover = page.locator("[data-scope=popover][data-part=content][data-state=open]")
    popover.locator("input[placeholder='YYYY/MM/DD']").fill(day)
    popover.locator("input[placeholder='HH:mm']").fill(hour_minute)
    page.keyboard.press("Escape")
