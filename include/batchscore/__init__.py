"""batchscore: the engine behind the batch-inference DAGs.

Subpackages follow a run's flow, each importing only those below it (the import-linter
contracts in ``pyproject.toml``)::

    run       planning, the stages, the threaded runner, progress
    sink      slice load, partitioned output table, publish, shadow table, run record
    scoring   feature types, validation, predict, compiled trees, drift, shadow comparison
    source | models   the warehouse read in slices | registry, intake, MLflow
    pipeline  the pipeline file, windows
    errors, settings, db   base modules everything may import

Beside and above the engine: ``airflow`` (the only Airflow-aware code), ``cli``, ``local``
(embedded PostgreSQL, local stack, demo) and ``reports`` (the Scoring view's queries). The
DAGs in ``dags/`` call in through ``batchscore.airflow``; the command line
(``python -m batchscore``) calls the same functions without a scheduler.
"""

__version__ = "0.1.0"
