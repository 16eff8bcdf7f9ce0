"""Airflow UI plugin: the "Scoring" view inside Airflow's UI, and a check of scoring windows at trigger time.

- A "Scoring" entry in the navigation: every pipeline's recent windows with their charts
  (``scoring_ui.app``, mounted on the api-server at ``/scoring``, shown in Airflow's iframe).
- A "Scoring" tab on every DAG run: that run's record, charts, drift, challenger and rejects
  (Airflow fills ``{DAG_ID}`` and ``{RUN_ID}`` in the tab's address; other DAGs' runs say they
  have no scoring record).
- A root middleware that answers 400 to a scoring DAG's trigger whose window ``plan`` would
  refuse (end before start, one end alone, in the future, too long), so no run is created.

Every page and endpoint needs a logged-in Airflow user, and shows a pipeline only to a user the
auth manager lets read its DAG's runs (its rejected values: its task logs); see
``scoring_ui.access`` and docs/security.md.
"""

from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin
from scoring_ui.lazy_app import LazyApp
from scoring_ui.trigger_guard import TriggerWindowGuard


class ScoringRunsPlugin(AirflowPlugin):
    name = "scoring_runs"
    # Built on its first request: every task process loads this plugin too, and never serves it.
    fastapi_apps = [{"app": LazyApp("scoring_ui.app"), "url_prefix": "/scoring", "name": "Scoring runs"}]  # noqa: RUF012
    fastapi_root_middlewares = [  # noqa: RUF012 (Airflow API)
        {"middleware": TriggerWindowGuard, "args": [], "kwargs": {}, "name": "Scoring window check"}
    ]
    external_views = [  # noqa: RUF012 (Airflow API)
        # url_route: rendered inside Airflow's UI (an iframe at /plugin/scoring), not as an outside link.
        {
            "name": "Scoring",
            "href": "/scoring/runs",
            "destination": "nav",
            "url_route": "scoring",
            "nav_top_level": True,
        },
        {
            "name": "Scoring",
            "href": "/scoring/run?dag_id={DAG_ID}&run_id={RUN_ID}&embed=true",
            "destination": "dag_run",
            "url_route": "scoring-run",
        },
    ]
