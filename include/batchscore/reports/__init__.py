"""What the Scoring view shows: queries over the run records, and the series of its charts.

May import the engine (the run record's columns); the plugin in ``plugins/scoring_ui`` imports it.
"""
