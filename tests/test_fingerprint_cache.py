"""The environment fingerprint of observed steps, kept on disk between processes: the
same digest as reading every distribution, and a new one as soon as a distribution is
installed or removed."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from codetape.sandbox import _fingerprint
from codetape.sandbox._fingerprint import host_fingerprint


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A folder of distributions on ``sys.path``, and a cache folder of the test's own."""
    folder = tmp_path / "site-packages"
    folder.mkdir()
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(sys, "path", [*sys.path, str(folder)])
    host_fingerprint.cache_clear()
    yield folder
    host_fingerprint.cache_clear()


def _install(site: Path, name: str, version: str) -> None:
    info = site / f"{name}-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")


def _fresh() -> str:
    """The digest read from every distribution, as without the cache."""
    fp = host_fingerprint()
    return "sha256:" + _fingerprint._digest(fp.python, fp.platform)


def test_a_later_process_reads_the_same_digest_without_reading_the_distributions(
    site: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = host_fingerprint().digest
    assert first == _fresh()
    host_fingerprint.cache_clear()  # as a new process

    def unread(python: str, plat: str) -> str:
        raise AssertionError("read every distribution again")

    monkeypatch.setattr(_fingerprint, "_digest", unread)
    assert host_fingerprint().digest == first


def test_installing_or_removing_a_distribution_changes_the_digest(site: Path) -> None:
    before = host_fingerprint().digest
    _install(site, "orderbook", "1.0")
    host_fingerprint.cache_clear()
    installed = host_fingerprint().digest
    assert installed != before
    assert installed == _fresh()

    for path in sorted(site.rglob("*"), reverse=True):
        path.unlink() if path.is_file() else path.rmdir()
    _install(site, "orderbook", "2.0")  # upgraded
    host_fingerprint.cache_clear()
    upgraded = host_fingerprint().digest
    assert upgraded not in (before, installed)
    assert upgraded == _fresh()


def test_a_damaged_cache_file_is_computed_again(site: Path) -> None:
    digest = host_fingerprint().digest
    [cached] = (site.parent / "cache" / "codetape" / "fingerprints").iterdir()
    cached.write_text("sha256:not a digest")
    host_fingerprint.cache_clear()
    assert host_fingerprint().digest == digest
    assert cached.read_text() == digest  # and written again whole
