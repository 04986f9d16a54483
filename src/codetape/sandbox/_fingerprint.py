"""The environment fingerprint of an observed step: what stands in for an image digest.

Reading every installed distribution's metadata takes tens of milliseconds (more with
a cold disk cache), which a short agent process would pay at its first step. So the
digest is also kept in a small file under the user's cache folder, named by a key of
everything it depends on: the Python version and platform, the interpreter's prefix,
and each ``sys.path`` folder with its modification time and the names in it
(installing, upgrading or removing a distribution adds or removes a
``name-version.dist-info`` folder there, which changes both). A process whose key has a
file reads the digest from it; any trouble with the file means computing it as before.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import platform
import sys
import tempfile
from importlib import metadata
from pathlib import Path

__all__ = ["Fingerprint", "host_fingerprint"]

_DIGEST_CHARS = len("sha256:") + 64


class Fingerprint:
    __slots__ = ("digest", "platform", "python")

    def __init__(self, python: str, platform: str, digest: str) -> None:
        self.python = python
        self.platform = platform
        self.digest = digest


@functools.lru_cache(maxsize=1)
def host_fingerprint() -> Fingerprint:
    """Python version, platform, and a digest of the installed distributions.

    Computed once per process (and kept on disk for the next process with the same
    ``sys.path`` as it was): the installed set does not change under a running agent
    often enough to pay for reading every distribution's metadata on each step.
    """
    python = platform.python_version()
    plat = f"{sys.platform}-{platform.machine()}"
    cached = _cache_file(python, plat)
    if cached is not None:
        with contextlib.suppress(OSError, UnicodeDecodeError):
            digest = cached.read_text("ascii")
            if len(digest) == _DIGEST_CHARS and digest.startswith("sha256:"):
                return Fingerprint(python, plat, digest)
    digest = "sha256:" + _digest(python, plat)
    if cached is not None:
        _store(cached, digest)
    return Fingerprint(python, plat, digest)


def _digest(python: str, plat: str) -> str:
    dists = sorted({f"{d.metadata['Name']}=={d.version}".lower() for d in metadata.distributions()})
    return hashlib.sha256("\n".join([python, plat, *dists]).encode()).hexdigest()


def _cache_file(python: str, plat: str) -> Path | None:
    """The file that holds the digest for this interpreter and its ``sys.path`` as it
    is now; ``None`` when there is no cache folder to use."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    if not os.path.isabs(base):
        return None
    parts = [python, plat, sys.prefix, sys.executable]
    for entry in sys.path:
        folder = os.path.abspath(entry or ".")
        try:
            mtime = os.stat(folder).st_mtime_ns
            names = sorted(os.listdir(folder)) if os.path.isdir(folder) else []
        except OSError:
            mtime, names = -1, []
        # The names too: two changes within one tick of the file system's clock leave
        # the folder's time as it was, but not its ``name-version.dist-info`` folders.
        parts.append("\0".join([folder, str(mtime), *names]))
    key = hashlib.sha256("\n".join(parts).encode("utf-8", "surrogatepass")).hexdigest()
    return Path(base) / "codetape" / "fingerprints" / key[:32]


def _store(path: Path, digest: str) -> None:
    """Write ``digest`` to ``path`` whole (a temporary file renamed), or not at all."""
    with contextlib.suppress(OSError):
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".fingerprint-")
        try:
            with os.fdopen(fd, "w", encoding="ascii") as out:
                out.write(digest)
            os.replace(tmp, path)
        except OSError:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
