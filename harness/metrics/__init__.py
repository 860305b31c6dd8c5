"""Metrics: per-sample statistics, aggregation, bootstrap confidence intervals."""
