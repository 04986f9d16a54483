"""The sandbox as codetape's other packages use it: the outcome's parts, backends, the
Docker client, image building and the host's environment fingerprint. Not for users:
these names may change in any release (use ``Sandbox``)."""

from __future__ import annotations

from . import _statecodec as state_codec
from ._backends import LABEL, docker_client
from ._fingerprint import Fingerprint, host_fingerprint
from ._image import (
    OFFLINE_IMAGE,
    BuiltImage,
    build_image,
    build_offline_image,
    default_tag,
    dockerfile,
)
from ._leftovers import EXITED_GRACE_S, Leftover, clean_containers, find_leftovers
from ._messages import StateMessage
from ._outcome import Checkpoint, Outcome, Pickled, RawState, RawVariable, RelayedCall
from ._pool import WarmPool, removal_in_background, warm_pool
from ._runtime import RuntimeReport, VulnerableRuntimeWarning, check_runtime
from ._sandbox import PICKLE_PROTOCOL, tool_name
from ._statecodec import Snapshotter as StateSnapshotter
from ._statecodec import mask_addresses, qualified_name

__all__ = [
    "EXITED_GRACE_S",
    "LABEL",
    "OFFLINE_IMAGE",
    "PICKLE_PROTOCOL",
    "BuiltImage",
    "Checkpoint",
    "Fingerprint",
    "Leftover",
    "Outcome",
    "Pickled",
    "RawState",
    "RawVariable",
    "RelayedCall",
    "RuntimeReport",
    "StateMessage",
    "StateSnapshotter",
    "VulnerableRuntimeWarning",
    "WarmPool",
    "build_image",
    "build_offline_image",
    "check_runtime",
    "clean_containers",
    "default_tag",
    "docker_client",
    "dockerfile",
    "find_leftovers",
    "host_fingerprint",
    "mask_addresses",
    "qualified_name",
    "removal_in_background",
    "state_codec",
    "tool_name",
    "warm_pool",
]
