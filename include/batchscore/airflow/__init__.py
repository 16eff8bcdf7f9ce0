"""The Airflow adapter, the only Airflow-aware code: the DAG factory, the glue (context and connections to
engine inputs) and the generated DAG files.

May import the engine; the engine never imports it (an import-linter contract in pyproject.toml).
"""
