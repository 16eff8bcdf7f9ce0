"""The Scoring view inside Airflow's UI: run records, charts, drift, the challenger and rejects.

``app`` is the FastAPI app the plugin mounts at ``/scoring`` (pages, JSON and the vendored
chart library, all behind Airflow's login); ``trigger_guard`` refuses a bad scoring window when
a run is triggered. Airflow imports this package by name (``plugins/`` is on its path); the
``.airflowignore`` beside it keeps the plugin loader from importing its files one by one.
"""
