"""The Scoring view's app is imported on its first request, so loading the plugin costs a task nothing."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from fastapi import FastAPI
from fastapi.testclient import TestClient

from tests.unit.plugins.test_scoring_ui import PLUGINS


def test_loading_the_plugin_does_not_import_the_scoring_view() -> None:
    probe = textwrap.dedent(
        f"""
        import sys
        sys.path.insert(0, {str(PLUGINS)!r})
        import scoring_runs_plugin
        app = scoring_runs_plugin.ScoringRunsPlugin.fastapi_apps[0]["app"]
        print("scoring_ui.app" in sys.modules, "airflow.api_fastapi.app" in sys.modules, type(app).__name__)
        """
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=300, check=True)
    assert done.stdout.split() == ["False", "False", "LazyApp"]


def test_the_first_request_imports_the_app_and_every_request_reaches_it() -> None:
    sys.path.insert(0, str(PLUGINS))
    try:
        from scoring_ui.lazy_app import LazyApp

        lazy = LazyApp("tests.unit.plugins.lazy_target")
        sys.modules.pop("tests.unit.plugins.lazy_target", None)
        host = FastAPI()
        host.mount("/scoring", lazy)
        client = TestClient(host)
        assert "tests.unit.plugins.lazy_target" not in sys.modules
        first = client.get("/scoring/hello", params={"who": "a"})
        second = client.get("/scoring/hello", params={"who": "b"})
        assert "tests.unit.plugins.lazy_target" in sys.modules
        assert (first.status_code, first.json()) == (200, {"hello": "a", "root_path": "/scoring"})
        assert second.json()["hello"] == "b"
        assert lazy.load() is sys.modules["tests.unit.plugins.lazy_target"].app
    finally:
        sys.path.remove(str(PLUGINS))
