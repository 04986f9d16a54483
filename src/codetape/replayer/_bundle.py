"""Bundles: one file that carries a run (spans and blobs, and optionally its sandbox
image) from one store to another, to send a failing run to a colleague. A run's bundle
carries the runs its steps started too (managed agents' runs, and theirs), so the
receiver sees the whole nest.

The manifest names the run (``run_id``) and every run the bundle holds (``runs``, the
run first); ``spans.jsonl`` holds each run's "start" record and spans."""

from __future__ import annotations

import io
import json
import os
import tarfile
import tempfile
import time
import uuid
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .._version import __version__
from ..errors import CodetapeError, DockerUnavailableError
from ..schemas import attributes as A
from ..store import Store
from ..store.internal import BlobStore, live_dir, refuse_archive, resolve_home

__all__ = ["BundleInfo", "export_run", "import_bundle"]

FORMAT = "codetape-bundle"
VERSION = 1
_STATE_KEYS = (A.STATE_BEFORE, A.STATE_AFTER, A.STEP_RANDOM_STATE)


@dataclass
class BundleInfo:
    """What an export wrote or an import loaded."""

    path: Path
    run_id: str
    spans: int = 0
    blobs: int = 0
    images: list[str] = field(default_factory=list)
    # The runs started by the run's steps, and by theirs, that came along.
    child_runs: list[str] = field(default_factory=list)


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = int(time.time())
    tar.addfile(info, io.BytesIO(data))


def _span_records(store: Store, run_id: str) -> list[dict[str, Any]]:
    rows = store._query(
        "SELECT span_id, parent_id, name, start_ns, end_ns, status, status_message, "
        "attributes, events FROM spans WHERE trace_id = ? ORDER BY start_ns",
        [run_id],
    )
    records = []
    for span_id, parent, name, start, end, status, message, attrs, events in rows:
        records.append(
            {
                "t": "span",
                "trace_id": run_id,
                "span_id": span_id,
                "parent_id": parent,
                "name": name,
                "start_ns": start,
                "end_ns": end,
                "status": status,
                "status_message": message,
                "attributes": json.loads(attrs or "{}"),
                "events": json.loads(events or "[]"),
            }
        )
    return records


def _start_record(store: Store, run_id: str) -> dict[str, Any]:
    """The run's "start" record, so a run that never ended imports as incomplete."""
    row = store._query(
        "SELECT span_id, name, task, started_ns, replay_of, parent FROM runs WHERE run_id = ?",
        [run_id],
    )[0]
    span_id, name, task, started, replay_of, parent = row
    attrs: dict[str, Any] = {A.GEN_AI_AGENT_NAME: name, A.GEN_AI_OPERATION_NAME: "invoke_agent"}
    if task is not None:
        attrs[A.RUN_TASK] = task
    if replay_of is not None:
        attrs[A.RUN_REPLAY_OF] = replay_of
    if parent is not None:
        attrs[A.RUN_PARENT] = parent
    return {
        "t": "start",
        "trace_id": run_id,
        "span_id": span_id,
        "parent_id": None,
        "name": f"{A.SPAN_INVOKE_AGENT} {name}",
        "start_ns": started,
        "attributes": attrs,
    }


def _nest(store: Store, run_id: str) -> list[str]:
    """The run, then the runs its steps started, and theirs, each once."""
    found = [run_id]
    for parent in found:  # grows as it goes: breadth first
        rows = store._query(
            "SELECT run_id FROM runs WHERE starts_with(parent, ?) ORDER BY started_ns",
            [parent + ":"],
        )
        found += [child for (child,) in rows if child not in found]
    return found


def _digests(store: Store, records: list[dict[str, Any]]) -> set[str]:
    """Every blob the run names: attribute digests and the values in its manifests."""
    found: set[str] = set()
    for record in records:
        for key, value in record.get("attributes", {}).items():
            if (
                isinstance(value, str)
                and value.startswith("sha256:")
                and (key.endswith(".digest") or key in _STATE_KEYS)
            ):
                found.add(value)
    for record in records:
        for key in (A.STATE_BEFORE, A.STATE_AFTER):
            manifest = record.get("attributes", {}).get(key)
            if manifest:
                found.update(_manifest_blobs(json.loads(store.blob(manifest))))
    return found


def _manifest_blobs(manifest: dict[str, Any]) -> set[str]:
    """The blobs a recorded state names: its checkpoint, large values and files (or,
    in a store written before checkpoints, each variable's value)."""
    if manifest.get("format") != 2:
        return {snap["digest"] for snap in manifest.values() if snap.get("digest")}
    point = manifest.get("checkpoint") or {}
    if not point.get("digest"):
        return set()
    found = {point["digest"], *dict(point.get("large", {})).values()}
    if point.get("files"):
        found.add(point["files"])
    return found


def export_run(
    run_id: str,
    path: str | os.PathLike[str],
    *,
    with_image: bool = False,
    home: str | os.PathLike[str] | None = None,
) -> BundleInfo:
    """Write one run, the runs its steps started (and theirs), their blobs and
    (``with_image``) their sandbox images to ``path``.

    >>> info = codetape.export_run("3f2a", "failing.codetape")    # doctest: +SKIP
    >>> info.run_id, info.child_runs, info.spans
    ('3f2a9c…', ['7d01e4…'], 9)
    """
    store = Store(home)
    with store.session():
        full = store.resolve_run_id(run_id)
        runs = _nest(store, full)
        records = [
            record
            for one in runs
            for record in (_start_record(store, one), *_span_records(store, one))
        ]
        digests = sorted(_digests(store, records))
    images = _images(records) if with_image else []
    target = Path(path)
    info = BundleInfo(
        target,
        full,
        spans=len(records) - len(runs),
        blobs=len(digests),
        images=images,
        child_runs=runs[1:],
    )
    tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex[:6]}.tmp")
    try:
        with tarfile.open(tmp, "w:gz", compresslevel=1) as tar:
            manifest = {
                "format": FORMAT,
                "version": VERSION,
                "run_id": full,
                "runs": runs,
                "codetape": __version__,
                "images": images,
            }
            _add(tar, "manifest.json", json.dumps(manifest, indent=2).encode())
            _add(tar, "spans.jsonl", "".join(json.dumps(r) + "\n" for r in records).encode())
            for digest in digests:
                _add(tar, f"blobs/{digest.removeprefix('sha256:')}", store.blob(digest))
            for image_id in images:
                _add_image(tar, image_id)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return info


def _images(records: list[dict[str, Any]]) -> list[str]:
    """The sandbox images the records' steps ran in."""
    return sorted(
        {
            r["attributes"][A.CONTAINER_IMAGE_ID]
            for r in records
            if r.get("attributes", {}).get(A.CONTAINER_IMAGE_ID)
        }
    )


def _add_image(tar: tarfile.TarFile, image_id: str) -> None:
    from ..sandbox.internal import docker_client

    client = docker_client()
    try:
        image = client.images.get(image_id)
    except Exception as exc:
        raise CodetapeError(
            f"cannot export the image {image_id}: it is not in Docker ({type(exc).__name__})"
        ) from None
    with tempfile.TemporaryFile() as spill:  # a tar member needs its size up front
        for chunk in image.save(named=True):
            spill.write(chunk)
        size = spill.tell()
        spill.seek(0)
        member = tarfile.TarInfo(f"images/{image_id.removeprefix('sha256:')}.tar")
        member.size = size
        member.mtime = int(time.time())
        tar.addfile(member, spill)


def import_bundle(
    path: str | os.PathLike[str], *, home: str | os.PathLike[str] | None = None
) -> BundleInfo:
    """Load a bundle into the store at ``home`` (and its images into Docker).

    The bundle is read and checked whole before anything is written, so a damaged one
    leaves the store as it was."""
    source = Path(path)
    refuse_archive(resolve_home(home), "import a bundle into it")
    try:
        with _open_bundle(source) as tar:
            manifest = _manifest(tar, source)
            members = tar.getmembers()
            names = {m.name for m in members}
            if "spans.jsonl" not in names:
                raise CodetapeError(f"{source} is not a complete codetape bundle (no spans)")
            spans = _member(tar, tar.getmember("spans.jsonl"))
            blob_data = [
                _member(tar, m) for m in members if m.name.startswith("blobs/") and m.isfile()
            ]
            store = Store(home)
            runs = manifest["runs"]
            info = BundleInfo(source, runs[0], child_runs=runs[1:])
            blobs = BlobStore(store.home / "blobs")
            for data in blob_data:
                blobs.put(data)
            info.blobs = len(blob_data)
            info.spans = spans.count(b"\n") - len(runs)
            for member in members:
                if member.name.startswith("images/") and member.isfile():
                    info.images.append(_load_image(tar, member))
    except (EOFError, OSError, tarfile.TarError, zlib.error) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise CodetapeError(f"{source} is not a readable codetape bundle: {first}") from None
    # An unlocked spool file is one whose writer is gone: ingestion takes it whole.
    spool = live_dir(store.home)
    spool.mkdir(parents=True, exist_ok=True)
    name = f"import-{uuid.uuid4().hex[:8]}.jsonl"
    hidden = spool / f".{name}.new"
    hidden.write_bytes(spans)
    os.replace(hidden, spool / name)
    store.refresh()
    return info


def _manifest(tar: tarfile.TarFile, source: Path) -> dict[str, Any]:
    manifest = _read_json(tar, "manifest.json", source)
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise CodetapeError(f"{source} is not a codetape bundle (no bundle manifest)")
    version = manifest.get("version")
    run_id = manifest.get("run_id")
    if not isinstance(version, int) or not isinstance(run_id, str):
        raise CodetapeError(f"{source} has a damaged bundle manifest")
    if version > VERSION:
        raise CodetapeError(
            f"{source} was written by a newer codetape (bundle version {version})",
            hint="upgrade codetape to import it",
        )
    # A bundle written before bundles carried child runs names only its run.
    runs = manifest.setdefault("runs", [run_id])
    if not isinstance(runs, list) or runs[:1] != [run_id]:
        raise CodetapeError(f"{source} has a damaged bundle manifest")
    if not all(isinstance(r, str) for r in runs):
        raise CodetapeError(f"{source} has a damaged bundle manifest")
    return manifest


def _open_bundle(source: Path) -> tarfile.TarFile:
    try:
        return tarfile.open(source, "r:*")
    except (OSError, tarfile.TarError) as exc:
        raise CodetapeError(f"{source} is not a codetape bundle ({type(exc).__name__})") from None


def _member(tar: tarfile.TarFile, member: tarfile.TarInfo) -> bytes:
    handle = tar.extractfile(member)
    if handle is None:
        raise CodetapeError(f"bundle member {member.name} is not a file")
    return handle.read()


def _read_json(tar: tarfile.TarFile, name: str, source: Path) -> Any:
    try:
        data = json.loads(_member(tar, tar.getmember(name)))
    except (KeyError, ValueError) as exc:
        raise CodetapeError(f"{source} is not a codetape bundle ({type(exc).__name__})") from None
    return data


def _load_image(tar: tarfile.TarFile, member: tarfile.TarInfo) -> str:
    from ..sandbox.internal import docker_client

    try:
        client = docker_client()
    except DockerUnavailableError as exc:
        raise CodetapeError(
            f"the bundle carries a sandbox image, but {exc.message}", hint=exc.hint
        ) from None
    handle = tar.extractfile(member)
    if handle is None:
        raise CodetapeError(f"bundle member {member.name} is not a file")
    loaded = client.images.load(handle)
    return ", ".join(image.id for image in loaded)
