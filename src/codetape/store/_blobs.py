"""Content-addressed blobs: large values live in files named by their sha256."""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

from ..errors import BlobNotFoundError

__all__ = ["BlobStore", "digest_of"]

_PREFIX = "sha256:"


def digest_of(data: bytes) -> str:
    return _PREFIX + hashlib.sha256(data).hexdigest()


class BlobStore:
    """Blob files under ``root/ab/cdef...``; writes are temp file + rename, so atomic.

    A blob is written once: equal content has an equal digest, which is what makes a
    50 MB variable that no step touches cost its bytes only once per store.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self._known: set[str] = set()

    def path(self, digest: str) -> Path:
        hexdigest = digest.removeprefix(_PREFIX)
        if len(hexdigest) != 64 or not all(c in "0123456789abcdef" for c in hexdigest):
            raise BlobNotFoundError(digest, self.root)
        return self.root / hexdigest[:2] / hexdigest[2:]

    def put(self, data: bytes, digest: str | None = None) -> str:
        digest = digest or digest_of(data)
        if digest in self._known:
            return digest
        target = self.path(digest)
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".tmp-")
            try:
                with os.fdopen(fd, "wb") as f:
                    f.write(data)
                os.replace(tmp, target)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
        self._known.add(digest)
        return digest

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
