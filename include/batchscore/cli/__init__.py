"""The command line (``python -m batchscore``): local stack, demo, scoring, DAG files, and the ``models`` commands.

May import anything in the package; nothing imports it but ``batchscore.__main__``.
"""
