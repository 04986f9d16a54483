"""The sandbox as codetape's other packages use it: the outcome's parts, backends, the
Docker client, image building and the host's environment fingerprint. Not for users:
these names may change in any release (use ``Sandbox``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import lazy_names

if TYPE_CHECKING:
    from . import _statecodec as state_codec
    from ._backends import LABEL, docker_client, docker_host, engine_key
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
    from ._pool import WarmPool, in_pool, removal_in_background, warm_pool
    from ._runtime import RuntimeReport, VulnerableRuntimeWarning, check_runtime
    from ._sandbox import tool_name
    from ._ship import Shipping, ensure_image, shipping_progress
    from ._statecodec import PROTOCOL as PICKLE_PROTOCOL
    from ._statecodec import Snapshotter as StateSnapshotter
    from ._statecodec import mask_addresses, qualified_name

# Imported when first used: recording an observed step needs the state codec and the
# fingerprint, not the sandbox's protocol (pydantic) or Docker.
_LAZY = {
    "EXITED_GRACE_S": "._leftovers",
    "LABEL": "._backends",
    "OFFLINE_IMAGE": "._image",
    "BuiltImage": "._image",
    "Checkpoint": "._outcome",
    "Fingerprint": "._fingerprint",
    "Leftover": "._leftovers",
    "Outcome": "._outcome",
    "Pickled": "._outcome",
    "RawState": "._outcome",
    "RawVariable": "._outcome",
    "RelayedCall": "._outcome",
    "RuntimeReport": "._runtime",
    "Shipping": "._ship",
    "StateMessage": "._messages",
    "VulnerableRuntimeWarning": "._runtime",
    "WarmPool": "._pool",
    "build_image": "._image",
    "build_offline_image": "._image",
    "check_runtime": "._runtime",
    "clean_containers": "._leftovers",
    "default_tag": "._image",
    "docker_client": "._backends",
    "docker_host": "._backends",
    "dockerfile": "._image",
    "engine_key": "._backends",
    "ensure_image": "._ship",
    "find_leftovers": "._leftovers",
    "host_fingerprint": "._fingerprint",
    "in_pool": "._pool",
    "mask_addresses": "._statecodec",
    "qualified_name": "._statecodec",
    "removal_in_background": "._pool",
    "shipping_progress": "._ship",
    "tool_name": "._sandbox",
    "warm_pool": "._pool",
}
# Names exported under another name than their module's.
# (The pickle protocol is the state codec's, which ``_sandbox`` uses too: the same 4.)
_RENAMED = {
    "PICKLE_PROTOCOL": ("._statecodec", "PROTOCOL"),
    "StateSnapshotter": ("._statecodec", "Snapshotter"),
    "state_codec": (".", "_statecodec"),
}

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
    "Shipping",
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
    "docker_host",
    "dockerfile",
    "engine_key",
    "ensure_image",
    "find_leftovers",
    "host_fingerprint",
    "in_pool",
    "mask_addresses",
    "qualified_name",
    "removal_in_background",
    "shipping_progress",
    "state_codec",
    "tool_name",
    "warm_pool",
]


__getattr__, __dir__ = lazy_names(__name__, {**_LAZY, **_RENAMED}, globals(), __all__)
