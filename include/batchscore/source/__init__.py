"""Reading the warehouse: the window's query rendered and cut into key-range slices, streamed as Arrow batches.

May import ``pipeline`` and the base modules; it knows nothing of models (a sibling of ``models``).
"""
