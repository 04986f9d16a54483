"""The container runtime under Docker: is it older than the fixes for known escapes?

The container is the sandbox's boundary, so a runtime with a known container escape
weakens it whatever codetape does. ``codetape doctor`` reports such a runtime as a
failed check, and a sandbox warns once per process when it starts on one.
"""

from __future__ import annotations

import re
import threading
import warnings
from dataclasses import dataclass
from typing import Any

__all__ = [
    "RUNC_FIXED",
    "RuntimeReport",
    "VulnerableRuntimeWarning",
    "check_runtime",
    "warn_once",
]

# runc 1.1.12 fixes CVE-2024-21626 (a file descriptor leaked into the container lets
# its process reach the host's filesystem: a container escape).
RUNC_FIXED = (1, 1, 12)
RUNC_CVE = "CVE-2024-21626"
_VERSION = re.compile(r"(\d+)\.(\d+)\.(\d+)")


class VulnerableRuntimeWarning(UserWarning):
    """Docker runs containers with a runtime that has a known container escape."""


@dataclass(frozen=True)
class RuntimeReport:
    """What the engine says of its runtime; ``problem`` is None when it is not known
    to be vulnerable, ``fix`` says how to mend it."""

    name: str
    version: str
    problem: str | None = None
    fix: str | None = None


def _runc_version(client: Any) -> str | None:
    for component in client.version().get("Components") or []:
        if str(component.get("Name", "")).lower() == "runc":
            return str(component.get("Version", ""))
    return None


def check_runtime(client: Any) -> RuntimeReport:
    """The default runtime of the engine ``client`` talks to, checked against
    ``RUNC_FIXED``. Another runtime (crun, gVisor's runsc...) is not judged."""
    default = str(client.info().get("DefaultRuntime") or "runc")
    if default != "runc":
        return RuntimeReport(default, "?")
    version = _runc_version(client)
    if version is None:
        return RuntimeReport("runc", "?")
    found = _VERSION.match(version)
    if found is None:
        return RuntimeReport("runc", version)
    if tuple(int(part) for part in found.groups()) >= RUNC_FIXED:
        return RuntimeReport("runc", version)
    fixed = ".".join(map(str, RUNC_FIXED))
    return RuntimeReport(
        "runc",
        version,
        problem=f"runc {version} is older than {fixed}, which fixes {RUNC_CVE}, a container "
        "escape: code in the sandbox may reach this machine",
        fix=f"upgrade runc to {fixed} or later (Docker's containerd.io package, or your "
        "distribution's runc); a distribution that backports the fix into an older "
        f"version says so in its changelog under {RUNC_CVE}",
    )


_warned: set[str] = set()
_warned_lock = threading.Lock()


def warn_once(client: Any, engine: str, stacklevel: int) -> None:
    """Warn, once per process and engine, when sandboxes start on a vulnerable runtime.
    A failure to ask the engine is not a reason to stop a sandbox: it is ignored."""
    with _warned_lock:
        if engine in _warned:
            return
        _warned.add(engine)
    try:
        report = check_runtime(client)
    except Exception:  # docker-py raises many unrelated types here
        return
    if report.problem is not None:
        warnings.warn(
            f"codetape: {report.problem}; {report.fix} (`codetape doctor` checks it)",
            VulnerableRuntimeWarning,
            stacklevel=stacklevel + 1,
        )
