"""Prometheus metrics: accounting figures read from the database, fleet state, service health."""
