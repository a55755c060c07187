"""Candidate stores: SQLite (embedded default) and PostgreSQL behind one interface."""

from ceap.store.base import Store, StoreConfig, open_store

__all__ = ["Store", "StoreConfig", "open_store"]
