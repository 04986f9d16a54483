"""The sandbox as codetape's other packages use it: backends, the Docker client, image
building and the host's environment fingerprint. Not for users: these names may change
in any release (use ``Sandbox``)."""

from __future__ import annotations

from ._backends import LABEL, docker_client
from ._fingerprint import Fingerprint, host_fingerprint
from ._image import BuiltImage, build_image, default_tag, dockerfile

__all__ = [
    "LABEL",
    "BuiltImage",
    "Fingerprint",
    "build_image",
    "default_tag",
    "docker_client",
    "dockerfile",
    "host_fingerprint",
]
