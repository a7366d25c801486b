"""Baseline run-to-example pipelines the workers are measured against."""
