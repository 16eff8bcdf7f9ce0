"""Turning a batch of rows into scores: feature types, validation and rejects, predict, compiled trees, drift,
the champion/challenger comparison, score summaries.

May import ``source``, ``models``, ``pipeline`` and the base modules; never the database writes of ``sink``.
"""
