"""Local development: the embedded PostgreSQL, the local Airflow stack, the demo warehouse and models.

May import the engine and ``airflow.dag_files``; the engine never imports it.
"""
