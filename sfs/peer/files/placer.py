"""The placer: verified files wait for one durable point, then take their final names."""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from sfs.errors import (
    SfsError,
)
from sfs.peer.files.destinations import keep_metadata
from sfs.peer.files.partial import PartFile, disk_error, make_durable, new_file_flags, place_part
from sfs.peer.proto.names import (
    STAGING_PREFIX,
)
from sfs.peer.proto.wire import (
    FileInfo,
)

logger = logging.getLogger(__name__)

#: Verified files wait for one durable point (and their final names, and their
#: acknowledgements) until this many are waiting, this many bytes, or this long.
#: Small files wait in memory: at most two batches' bytes (one being placed).
BATCH_FILES = 1000
BATCH_BYTES = 16 * 1024 * 1024
BATCH_SECONDS = 0.5


@dataclass
class Verified:
    """A file whose bytes checked out: its partial copy, or (a small file) its bytes,
    or neither (the whole file was already here); the offered file, and where it goes."""

    part: PartFile | None
    info: FileInfo
    dest: Path
    offset: int
    data: bytes | None = None
    #: The file's SHA-256 (checked), and the seconds its bytes took to arrive.
    sha256: bytes = b""
    seconds: float = 0.0


class Placer:
    """Verified files on their way to their final names, a batch at a time.

    Nothing unverified ever reaches a final name, and a tree of small files costs one
    sync per batch rather than one fsync per file.  A batch is made durable and placed
    in a worker thread while the next one arrives (one batch in flight at a time);
    once it is in place, ``acknowledge`` gets its files, in order.
    """

    def __init__(
        self,
        output_dir: Path,
        *,
        overwrite: bool,
        acknowledge: Callable[[list[Verified]], Awaitable[None]],
    ) -> None:
        self.output_dir = output_dir
        self.overwrite = overwrite
        self.waiting: list[Verified] = []
        self._staging: Path | None = None  # made when the first small file comes
        self._staged = 0
        self._acknowledge = acknowledge
        self._bytes = 0
        self._since = 0.0
        self._placing: asyncio.Future[list[Verified]] | None = None

    def add(self, item: Verified) -> None:
        if not self.waiting:
            self._since = time.monotonic()
        self.waiting.append(item)
        self._bytes += item.info.size

    async def poll(self, *, now: bool = False) -> None:
        """Acknowledge a batch that is in place; start the next when it is due (or,
        with ``now``, whatever waits: a large file comes next)."""
        if self._placing is not None and self._placing.done():
            await self._finish()
        due = (
            len(self.waiting) >= BATCH_FILES
            or self._bytes >= BATCH_BYTES
            or time.monotonic() - self._since >= BATCH_SECONDS
        )
        if self.waiting and self._placing is None and (due or now):
            self._start()

    async def drain(self) -> None:
        """Place and acknowledge everything (at the end)."""
        if self._placing is not None:
            await self._finish()
        if self.waiting:
            self._start()
            await self._finish()

    async def abandon(self) -> None:
        """On a failure: the batch in flight finishes, and the files still waiting,
        all verified, are placed too; no acknowledgement can go out any more."""
        try:
            if self._placing is not None:
                await asyncio.shield(self._placing)
            if self.waiting:
                items, self.waiting = self.waiting, []
                await asyncio.to_thread(self._place_all, items)
        except (SfsError, OSError):
            logger.info("verified files kept as partial copies", exc_info=True)

    def _start(self) -> None:
        items, self.waiting, self._bytes = self.waiting, [], 0
        self._placing = asyncio.ensure_future(asyncio.to_thread(self._place_all, items))

    async def _finish(self) -> None:
        assert self._placing is not None
        # Shielded: a caller that stops waiting (Ctrl-C, a lost peer) must not cancel
        # the batch, which its thread places anyway; abandon() waits for it.
        items = await asyncio.shield(self._placing)
        self._placing = None
        await self._acknowledge(items)

    async def close(self) -> None:
        """Remove the staging folder: sfs made it (mkdtemp, private) and wrote all
        that is in it; anything left there is a copy of a file placed or abandoned."""
        if self._staging is not None:
            await asyncio.to_thread(shutil.rmtree, self._staging, True)

    def _place_all(self, items: list[Verified]) -> list[Verified]:
        started = time.monotonic()
        staged: list[tuple[Path, Verified]] = []
        for item in items:
            if item.data is not None:
                staged.append((self._stage(item.data, item.info), item))
            elif item.part is not None:
                keep_metadata(item.part.part, item.info)  # before the link: one inode
        parts = [item.part for item in items if item.part is not None]
        make_durable([part.part for part in parts] + [path for path, _ in staged])
        for item in items:
            if item.part is not None:
                item.dest = item.part.place(overwrite=self.overwrite)
        for path, item in staged:
            try:
                item.dest = place_part(path, item.dest, overwrite=self.overwrite)
            except OSError as exc:
                raise disk_error(exc, item.dest) from exc
        logger.debug("placed %d files in %.3f s", len(items), time.monotonic() - started)
        return items

    def _stage(self, data: bytes, info: FileInfo) -> Path:
        """Write a small file's verified bytes into sfs's own staging folder: one new
        file each, no partial copy or record (nothing to resume in a small file)."""
        try:
            if self._staging is None:
                self._staging = Path(tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=self.output_dir))
            self._staged += 1
            path = self._staging / str(self._staged)
            fd = os.open(path, new_file_flags(), 0o644)
            with os.fdopen(fd, "wb") as f:
                f.write(data)
        except OSError as exc:
            raise disk_error(exc, self._staging or self.output_dir) from exc
        keep_metadata(path, info)
        return path
