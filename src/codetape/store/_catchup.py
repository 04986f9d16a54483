"""What this process has ingested, so that a read with nothing new stays cheap.

Readers catch up before every read, so that check must cost little when there is
nothing to do: each pass remembers, per store, the database file it wrote to and the
size and time of every live spool file it read to the end. ``spool_changed`` compares
the spool with that without opening the database: a read with nothing new costs a
directory listing, a ``stat`` and a lock probe per live spool file.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from pathlib import Path

from ._db import DB_NAME
from ._spool import live_dir, writer_alive

__all__ = ["Mark", "db_identity", "key", "mark", "remember", "spool_changed"]

Mark = tuple[int, int, int]  # a spool file's inode, size and mtime (ns)


@dataclass(frozen=True)
class _Seen:
    """The spool as of this process's last complete ingestion pass over a store."""

    db: tuple[int, int]  # the database file it wrote to (device, inode)
    files: dict[str, Mark]  # each live spool file read to its end, writer alive


_seen: dict[Path, _Seen] = {}
_seen_lock = threading.Lock()


def key(home: Path) -> Path:
    """One key per store directory, however it was spelled (relative, via a symlink)."""
    return Path(os.path.realpath(home))


def db_identity(home: Path) -> tuple[int, int] | None:
    try:
        st = os.stat(home / DB_NAME)
    except FileNotFoundError:
        return None
    return st.st_dev, st.st_ino


def mark(st: os.stat_result) -> Mark:
    return st.st_ino, st.st_size, st.st_mtime_ns


def spool_changed(home: Path) -> bool:
    """Whether the spool under ``home`` may hold records the database lacks, judged
    without opening the database: a spool file this process has not read to its end
    (new, grown, or replaced), one whose writer has died since (its running run is now
    incomplete), or a database file other than the one it wrote to. ``True`` when in
    doubt, so the worst a wrong answer costs is one ingestion pass that finds nothing."""
    try:
        entries = os.scandir(live_dir(home))
    except FileNotFoundError:
        return False  # nothing was ever spooled; a read creates the empty database
    with entries:
        with _seen_lock:
            seen = _seen.get(key(home))
        if seen is None or seen.db != db_identity(home):
            return True
        for entry in entries:
            if not entry.name.endswith(".jsonl") or entry.name.startswith("."):
                continue
            try:
                now = mark(entry.stat())
            except FileNotFoundError:
                continue  # ingested to its end and moved to spool/done meanwhile
            if seen.files.get(entry.name) != now or not writer_alive(Path(entry.path)):
                return True
    return False


def remember(home: Path, db: tuple[int, int] | None, files: dict[str, Mark]) -> None:
    """Note what a complete pass read. Only a pass that wrote to the file it started
    with (not one a rebuild moved away meanwhile) vouches for the database there now."""
    if db is not None and db == db_identity(home):
        with _seen_lock:
            _seen[key(home)] = _Seen(db, files)
