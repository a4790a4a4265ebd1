"""Alembic migrations for gpucost; run them with `gpucost db upgrade`."""
