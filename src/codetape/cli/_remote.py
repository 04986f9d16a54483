"""What ``codetape --remote URL`` does that is more than a read of ``RemoteStore``:
writing the bundle the server exports."""

from __future__ import annotations

import io
import json
import os
import tarfile
import uuid
from pathlib import Path

from ..errors import ConfigError
from ..replayer import BundleInfo
from ..store.internal import RemoteStore, RemoteStoreError

__all__ = ["export_remote"]


def export_remote(
    store: RemoteStore, run_id: str, path: Path, *, with_image: bool = False
) -> BundleInfo:
    """Write the bundle of ``run_id`` that the server exports to ``path`` (the file
    ``codetape export`` writes on the server's machine), and say what it holds."""
    if with_image:
        raise ConfigError(
            "--with-image is not served by --remote: the images are in the Docker engines "
            "of the machines that recorded the runs",
            hint="export without --with-image, or with it on a machine that has the image",
        )
    data = store.bundle(run_id)
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
            names = tar.getnames()
            manifest_file = tar.extractfile("manifest.json")
            spans_file = tar.extractfile("spans.jsonl")
            if manifest_file is None or spans_file is None:
                raise KeyError("manifest.json")
            manifest = json.loads(manifest_file.read())
            records = spans_file.read().splitlines()
    except (tarfile.TarError, KeyError, ValueError) as exc:
        raise RemoteStoreError(
            f"the server at {store.url} sent a bundle codetape cannot read: {exc}"
        ) from None
    runs = list(manifest.get("runs", []))
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:6]}.tmp")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return BundleInfo(
        path,
        str(manifest.get("run_id", "")),
        spans=len(records) - len(runs),
        blobs=sum(1 for n in names if n.startswith("blobs/")),
        images=[],
        child_runs=runs[1:],
    )
