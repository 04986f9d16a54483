"""Content-addressed blobs: values named by their sha256.

Small blobs (most code, output, tool results and variables) travel in the spool as
records of their own and are ingested into DuckDB with the spans: an append costs a
couple of microseconds where creating a file costs tens to hundreds. Large blobs are
files under ``root/ab/cdef...``, written as temp file + rename, so atomic. Either way a
blob is written before the span that names it, so a span never points at nothing.
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import os
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import BlobNotFoundError

if TYPE_CHECKING:
    from ._spool import SpoolWriter

__all__ = ["SMALL_BLOB", "BlobStore", "blob_record", "digest_of"]

_PREFIX = "sha256:"
SMALL_BLOB = 16 * 1024
_tmp_names = itertools.count()


def digest_of(data: bytes) -> str:
    return _PREFIX + hashlib.sha256(data).hexdigest()


def blob_record(digest: str, data: bytes) -> dict[str, str]:
    """The spool record of a small blob: text when it is UTF-8, base64 otherwise."""
    try:
        return {"t": "blob", "digest": digest, "text": data.decode("utf-8")}
    except UnicodeDecodeError:
        return {"t": "blob", "digest": digest, "b64": base64.b64encode(data).decode("ascii")}


class BlobStore:
    """Writes blobs once each: equal content has an equal digest, which is what makes a
    50 MB variable that no step touches cost its bytes only once per store.

    With a ``spool``, blobs up to ``SMALL_BLOB`` bytes go into it; without one (or when
    larger) they are files. ``get`` reads files only: small blobs are read back through
    the store's database, see ``Store.blob``.
    """

    def __init__(self, root: Path, spool: SpoolWriter | None = None) -> None:
        self.root = root
        self._spool = spool
        self._known: set[str] = set()
        self._dirs: set[str] = set()

    def path(self, digest: str) -> Path:
        hexdigest = digest.removeprefix(_PREFIX)
        if len(hexdigest) != 64 or not all(c in "0123456789abcdef" for c in hexdigest):
            raise BlobNotFoundError(digest, self.root)
        return self.root / hexdigest[:2] / hexdigest[2:]

    def put(self, data: bytes, digest: str | None = None) -> str:
        digest = digest or digest_of(data)
        if digest in self._known:
            return digest
        if self._spool is not None and len(data) <= SMALL_BLOB:
            self._spool.write(blob_record(digest, data), defer=True)
        else:
            self._write_file(digest, data)
        self._known.add(digest)
        return digest

    def _write_file(self, digest: str, data: bytes) -> None:
        target = str(self.path(digest))
        if os.path.exists(target):
            return
        folder = os.path.dirname(target)
        if folder not in self._dirs:
            os.makedirs(folder, exist_ok=True)
            self._dirs.add(folder)
        tmp = f"{folder}/.tmp-{os.getpid()}-{next(_tmp_names)}"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
            finally:
                os.close(fd)
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def put_text(self, text: str) -> str:
        return self.put(text.encode("utf-8", "surrogatepass"))

    def get(self, digest: str) -> bytes:
        try:
            return self.path(digest).read_bytes()
        except FileNotFoundError:
            raise BlobNotFoundError(digest, self.root) from None

    def get_text(self, digest: str) -> str:
        return self.get(digest).decode("utf-8", "replace")

    def exists(self, digest: str) -> bool:
        return digest in self._known or self.path(digest).exists()
