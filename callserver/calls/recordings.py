"""Which calls are recorded and where their files are: the store's side of call recordings."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import select, update

from callserver.store.database import Database
from callserver.store.models import Call, Site


class CallRecordings:
    """Answers the media engine's `RecordingStore` questions from the sites and calls tables."""

    def __init__(self, database: Database, directory: Path, var_dir: Path) -> None:
        self._db = database
        self._directory = directory
        self._var_dir = var_dir

    async def directory_for(self, call_id: str) -> Path | None:
        """`<recordings>/<site id>/` when the call's site records calls, else None."""
        async with self._db.session() as session:
            row = (
                await session.execute(
                    select(Site.id, Site.records_calls)
                    .join(Call, Call.site_id == Site.id)
                    .where(Call.id == call_id)
                )
            ).first()
        if row is None or not row.records_calls:
            return None
        return self._directory / str(row.id)

    async def saved(self, call_id: str, playback: Path) -> None:
        """Store the playback file's path, relative to `var_dir` when it lies inside it."""
        try:
            stored = str(playback.relative_to(self._var_dir))
        except ValueError:
            stored = str(playback)
        async with self._db.session() as session:
            await session.execute(update(Call).where(Call.id == call_id).values(recording_path=stored))
