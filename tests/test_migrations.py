"""The migrations build exactly the schema the models describe (no drift between the two)."""

from __future__ import annotations

from pathlib import Path

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine

import callserver.chats.models  # noqa: F401  (its tables belong to the same metadata)
from callserver.store.database import _upgrade
from callserver.store.models import Base


def test_a_fresh_database_matches_the_models(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite:///{tmp_path / 'fresh.db'}")
    with engine.begin() as connection:
        _upgrade(connection)
        differences = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    assert differences == []


def test_the_migrations_have_one_head() -> None:
    # Features may add migrations side by side while they are built; main merges them into one head.
    from alembic.script import ScriptDirectory

    from callserver.store.database import alembic_config

    assert len(ScriptDirectory.from_config(alembic_config()).get_heads()) == 1
