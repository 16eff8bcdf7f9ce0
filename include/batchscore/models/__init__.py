"""The model registry (skops files and sha256-checked manifests on a path or an object store), model intake, MLflow.

May import ``pipeline`` and the base modules; it knows nothing of the warehouse (a sibling of ``source``).
"""
