"""What a scoring job is: the pipeline file's schema and loading, the [start, end) window, a folder of pipeline files.

The bottom of the engine: imports only the base modules (``errors``, ``settings``, ``db``).
"""
