"""The benchmark behind ``scripts/bench.py``, split by what each module holds."""
