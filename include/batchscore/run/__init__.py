"""A scoring run: planning, the stages (plan, score a slice, publish), the in-process threaded runner, progress.

The top of the engine: may import every engine subpackage; imported by ``airflow``, ``cli`` and ``local``.
"""
