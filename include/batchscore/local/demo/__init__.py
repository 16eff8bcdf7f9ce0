"""The demo: a generated warehouse with a known ground truth, and a model trained on it."""
