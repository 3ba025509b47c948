"""Persistent records: SQLAlchemy models, the database handle and its migrations."""
