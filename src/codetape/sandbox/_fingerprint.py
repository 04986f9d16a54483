"""The environment fingerprint of an observed step: what stands in for an image digest."""

from __future__ import annotations

import functools
import hashlib
import platform
import sys
from importlib import metadata

__all__ = ["Fingerprint", "host_fingerprint"]


class Fingerprint:
    __slots__ = ("digest", "platform", "python")

    def __init__(self, python: str, platform: str, digest: str) -> None:
        self.python = python
        self.platform = platform
        self.digest = digest


@functools.lru_cache(maxsize=1)
def host_fingerprint() -> Fingerprint:
    """Python version, platform, and a digest of the installed distributions.

    Computed once per process: the installed set does not change under a running agent
    often enough to pay for reading every distribution's metadata on each step.
    """
    dists = sorted({f"{d.metadata['Name']}=={d.version}".lower() for d in metadata.distributions()})
    python = platform.python_version()
    plat = f"{sys.platform}-{platform.machine()}"
    digest = hashlib.sha256("\n".join([python, plat, *dists]).encode()).hexdigest()
    return Fingerprint(python, plat, "sha256:" + digest)
