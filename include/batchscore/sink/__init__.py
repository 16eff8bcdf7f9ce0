"""Writing to the scores database: a slice's load, the partitioned output table, the one-transaction publish,
the challenger's shadow table, the ``scoring_runs`` run record.

May import ``scoring`` and everything below it; never ``run``.
"""
