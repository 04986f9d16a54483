"""Write tracking of large buffers by the kernel: whether any byte of a memory range
was written since it was last looked at, in microseconds whatever its size.

Comparing a 100 MB ``bytearray`` (or a list's 100 MB array of element references) with
a copy reads all of it: milliseconds per step. Linux (6.7 and later) can instead report
which pages of a range were written since they were write-protected, without faulting
into the process: the range is registered with a userfaultfd in asynchronous
write-protect mode (``UFFD_FEATURE_WP_ASYNC``: the kernel lifts the protection of a
page on its first write and remembers it was written, no handler thread) and the
``PAGEMAP_SCAN`` ioctl on ``/proc/self/pagemap`` lists written pages. Every write is
seen: Python code, a ``memoryview``, C extensions, and the kernel itself writing into
the buffer (``recv_into``, ``readinto``), since all of them go through the page table.

Only whole pages inside one buffer are watched (a range is rounded inwards), so two
live buffers never share a watched page; the bytes at either end are compared by copy.
A range the kernel no longer tracks (it was unmapped or moved, or the process forked)
makes the scan fail, which counts as written. Protecting a range again (after its value
was described anew) starts a new epoch of it, and a watch of an older epoch counts as
written: two variables bound to one buffer never hide a write from each other.

``watcher()`` is None where any of this is missing (another system, an older kernel,
userfaultfd not permitted, as in containers under Docker's default seccomp profile);
the change checks then compare copies, as before.
"""

from __future__ import annotations

import ctypes
import mmap
import os
import platform
import sys
import threading
import weakref
from collections import deque
from typing import Any

__all__ = ["Watch", "WriteWatcher", "watcher"]

_PAGE = mmap.PAGESIZE
_SYSCALL = {"x86_64": 323, "aarch64": 282}  # userfaultfd's number
_UFFD_USER_MODE_ONLY = 1
_UFFD_API = 0xAA
_FEATURE_WP_UNPOPULATED = 1 << 13
_FEATURE_WP_ASYNC = 1 << 15
_MODE_WP = 1 << 1  # UFFDIO_REGISTER_MODE_WP
_WRITEPROTECT_MODE_WP = 1 << 0
_PM_SCAN_CHECK_WPASYNC = 1 << 1
_PAGE_IS_WRITTEN = 1 << 1


def _iowr(kind: int, number: int, size: int) -> int:
    return (3 << 30) | (size << 16) | (kind << 8) | number


def _struct(name: str, fields: str) -> type[ctypes.Structure]:
    """A C struct of 64-bit fields, named as in <linux/userfaultfd.h> and <linux/fs.h>."""
    return type(
        name, (ctypes.Structure,), {"_fields_": [(f, ctypes.c_uint64) for f in fields.split()]}
    )


_Api = _struct("uffdio_api", "api features ioctls")
_Register = _struct("uffdio_register", "start len mode ioctls")
_Protect = _struct("uffdio_writeprotect", "start len mode")
_Range = _struct("uffdio_range", "start len")
_Region = _struct("page_region", "start end categories")
_Scan = _struct(
    "pm_scan_arg",
    "size flags start end walk_end vec vec_len max_pages category_inverted category_mask "
    "category_anyof_mask return_mask",
)


_UFFDIO_API = _iowr(_UFFD_API, 0x3F, ctypes.sizeof(_Api))
_UFFDIO_REGISTER = _iowr(_UFFD_API, 0x00, ctypes.sizeof(_Register))
_UFFDIO_UNREGISTER = (2 << 30) | (ctypes.sizeof(_Range) << 16) | (_UFFD_API << 8) | 0x01
_UFFDIO_WRITEPROTECT = _iowr(_UFFD_API, 0x06, ctypes.sizeof(_Protect))
_PAGEMAP_SCAN = _iowr(ord("f"), 16, ctypes.sizeof(_Scan))


class Watch:
    """One watched range of whole pages, in one epoch: ``written()`` says whether any
    of its pages may have been written since it was made."""

    __slots__ = ("__weakref__", "_epoch", "_key", "_owner")

    def __init__(self, owner: WriteWatcher, key: tuple[int, int], epoch: int) -> None:
        self._owner, self._key, self._epoch = owner, key, epoch

    @property
    def start(self) -> int:
        return self._key[0]

    @property
    def end(self) -> int:
        return self._key[1]

    def written(self) -> bool:
        return self._owner._written(self._key, self._epoch)


class WriteWatcher:
    """The process's userfaultfd and pagemap, and the ranges they watch (counted: a
    range is unregistered when its last ``Watch`` is gone).

    A ``Watch`` that is collected only queues its range to be released (the garbage
    collector can run inside ``watch`` on the thread that holds the lock); the queue is
    emptied under the lock by the next ``watch`` or check."""

    def __init__(self, uffd: int, pagemap: int, ioctl: Any) -> None:
        self._uffd, self._pagemap, self._ioctl = uffd, pagemap, ioctl
        self._lock = threading.Lock()
        self._ranges: dict[tuple[int, int], list[int]] = {}  # key -> [watches, epoch]
        self._found = (_Region * 1)()
        self._pid = os.getpid()
        self._released: deque[tuple[int, int]] = deque()

    def watch(self, address: int, size: int) -> Watch | None:
        """A watch of the whole pages inside ``[address, address + size)``, written
        nothing since this call; None when the kernel refuses the range (memory that is
        not private and anonymous: a mapped file, shared memory)."""
        start = -(-address // _PAGE) * _PAGE
        end = (address + size) // _PAGE * _PAGE
        if end <= start or os.getpid() != self._pid:
            return None
        key = (start, end)
        with self._lock:
            self._release_queued()
            entry = self._ranges.get(key)
            if entry is None or self._scan(start, end):  # new, or written since
                register = _Register(start, end - start, _MODE_WP, 0)
                protect = _Protect(start, end - start, _WRITEPROTECT_MODE_WP)
                if (
                    self._ioctl(self._uffd, _UFFDIO_REGISTER, ctypes.byref(register)) != 0
                    or self._ioctl(self._uffd, _UFFDIO_WRITEPROTECT, ctypes.byref(protect)) != 0
                ):
                    return None
                if entry is None:
                    entry = self._ranges[key] = [0, 0]
                entry[1] += 1
            entry[0] += 1
            watch = Watch(self, key, entry[1])
        weakref.finalize(watch, self._released.append, key)
        return watch

    def _written(self, key: tuple[int, int], epoch: int) -> bool:
        with self._lock:
            self._release_queued()
            entry = self._ranges.get(key)
            if entry is None or entry[1] != epoch or os.getpid() != self._pid:
                return True
            return self._scan(*key)

    def _scan(self, start: int, end: int) -> bool:
        """Whether a page of the range was written, or the kernel no longer tracks it."""
        scan = _Scan(
            ctypes.sizeof(_Scan),
            _PM_SCAN_CHECK_WPASYNC,
            start,
            end,
            0,
            ctypes.addressof(self._found),
            1,
            1,
            0,
            _PAGE_IS_WRITTEN,
            0,
            _PAGE_IS_WRITTEN,
        )
        return bool(self._ioctl(self._pagemap, _PAGEMAP_SCAN, ctypes.byref(scan)) != 0)

    def _release_queued(self) -> None:
        """Release the ranges of the watches collected since (the lock held)."""
        while self._released:
            key = self._released.popleft()
            entry = self._ranges.get(key)
            if entry is not None:
                entry[0] -= 1
                if entry[0] <= 0:
                    self._unregister(key)

    def _unregister(self, key: tuple[int, int]) -> None:
        del self._ranges[key]
        if os.getpid() == self._pid:
            span = _Range(key[0], key[1] - key[0])
            self._ioctl(self._uffd, _UFFDIO_UNREGISTER, ctypes.byref(span))


def _open() -> WriteWatcher | None:
    """The watcher, once it has seen a write on a page of its own and no write on
    another; None where the kernel cannot."""
    number = _SYSCALL.get(platform.machine())
    if not sys.platform.startswith("linux") or number is None:
        return None
    uffd = pagemap = -1
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.syscall.restype = ctypes.c_long
        ioctl = libc.ioctl
        ioctl.argtypes = (ctypes.c_int, ctypes.c_ulong, ctypes.c_void_p)
        ioctl.restype = ctypes.c_int
        flags = os.O_CLOEXEC | os.O_NONBLOCK | _UFFD_USER_MODE_ONLY
        uffd = int(libc.syscall(number, flags))
        if uffd < 0:
            return None
        wanted = _FEATURE_WP_ASYNC | _FEATURE_WP_UNPOPULATED
        api = _Api(_UFFD_API, wanted, 0)
        if ioctl(uffd, _UFFDIO_API, ctypes.byref(api)) != 0 or api.features & wanted != wanted:
            raise OSError("no asynchronous write-protect")
        pagemap = os.open("/proc/self/pagemap", os.O_RDONLY | os.O_CLOEXEC)
        watcher = WriteWatcher(uffd, pagemap, ioctl)
        if not _works(watcher):
            raise OSError("pagemap scan does not see writes")
        return watcher
    except Exception:
        for fd in (uffd, pagemap):
            if fd >= 0:
                os.close(fd)
        return None


def _works(watcher: WriteWatcher) -> bool:
    area = mmap.mmap(-1, 4 * _PAGE)
    pages = (ctypes.c_char * (4 * _PAGE)).from_buffer(area)
    try:
        base = ctypes.addressof(pages)
        pages[0] = pages[3 * _PAGE] = b"x"  # two populated pages, two not
        first, second = watcher.watch(base, 2 * _PAGE), watcher.watch(base + 2 * _PAGE, 2 * _PAGE)
        if first is None or second is None or first.written() or second.written():
            return False
        pages[_PAGE] = b"y"  # a page never populated before
        seen = first.written() and not second.written()
        del first, second
        with watcher._lock:
            watcher._release_queued()
        return seen and not watcher._ranges
    finally:
        del pages
        area.close()


_lock = threading.Lock()
_opened = False
_watcher: WriteWatcher | None = None


def watcher() -> WriteWatcher | None:
    """The process's write watcher, made on first use; None where writes cannot be
    watched (``CODETAPE_WRITE_WATCH=0`` turns it off)."""
    global _opened, _watcher
    if not _opened:
        with _lock:
            if not _opened:
                if os.environ.get("CODETAPE_WRITE_WATCH", "1") != "0":
                    _watcher = _open()
                _opened = True
    return _watcher
