"""Trace and span ids from the operating system's randomness.

The SDK's default generator draws from the ``random`` module, which the agent's own
code may seed: after ``random.seed(42)`` in a code action, two runs would get the same
trace id, and a run id must never repeat.
"""

from __future__ import annotations

import secrets

from opentelemetry.sdk.trace.id_generator import IdGenerator
from opentelemetry.trace import INVALID_SPAN_ID, INVALID_TRACE_ID

__all__ = ["SecureIdGenerator"]


class SecureIdGenerator(IdGenerator):
    def generate_span_id(self) -> int:
        while (span_id := secrets.randbits(64)) == INVALID_SPAN_ID:
            pass
        return span_id

    def generate_trace_id(self) -> int:
        while (trace_id := secrets.randbits(128)) == INVALID_TRACE_ID:
            pass
        return trace_id
