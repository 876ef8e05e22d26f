"""Logs and metrics: the JSON log format and every Prometheus metric."""
