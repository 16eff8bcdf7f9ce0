"""batchscore: the engine behind the batch-inference DAGs.

Plain Python with no Airflow import at module level: extract a window from a
warehouse, score it with a registered scikit-learn model, publish the scores to
PostgreSQL. The DAGs in ``dags/`` call into this package through
``batchscore.airflow_glue``; the command line (``python -m batchscore``) calls
the same functions without a scheduler.
"""

__version__ = "0.1.0"
