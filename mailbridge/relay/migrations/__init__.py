"""Alembic scripts for the relay database, run by ``RelayStore.upgrade()`` (no alembic.ini)."""
