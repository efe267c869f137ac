"""
Serve a folder of files safely: L{StaticFiles}, a hardened C{static.File}.

On top of Twisted's C{static.File} (content types, C{Range}, producers) it
adds what a production file server needs:

  - no directory listings, no dotfiles, no symlink that leads outside the
    root, no C{..} in any encoding; a NUL or non-UTF-8 byte is a 400;
  - a strong C{ETag} and C{Last-Modified}, with C{304} for C{If-None-Match}
    and C{If-Modified-Since} (RFC 9110 precedence), and C{If-Range};
  - byte ranges that are merged and bounded, so overlapping ranges never
    send more bytes than the file holds;
  - C{Cache-Control: max-age} when the route sets C{cache:}, and
    C{X-Content-Type-Options: nosniff}.

    >>> StaticFiles.for_root(Path("sites/files"), cache=3600)
"""

from __future__ import annotations

import os
import stat
import time
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any

from twisted.web import http, resource, static
from twisted.web.iweb import IRequest
from twisted.web.pages import errorPage, forbidden, notFound
from twisted.web.server import NOT_DONE_YET

__all__ = ["Refused", "StaticFiles", "child_path"]

_MAX_RANGES = 16

_NOT_FOUND = notFound("File not found.")
_FORBIDDEN = forbidden("You may not read this file.")
_BAD_PATH = errorPage(http.BAD_REQUEST, "Bad Request", "The path is not valid.")

# Types that matter on the web but are missing from some mime.types files.
_WEB_TYPES = {
    ".css": "text/css",
    ".html": "text/html",
    ".js": "text/javascript",
    ".mjs": "text/javascript",
    ".json": "application/json",
    ".map": "application/json",
    ".svg": "image/svg+xml",
    ".wasm": "application/wasm",
    ".webp": "image/webp",
    ".avif": "image/avif",
    ".woff": "font/woff",
    ".woff2": "font/woff2",
    ".txt": "text/plain",
    ".gz": "application/gzip",
}


def _position(digits: bytes) -> int:
    """
    A byte position; one too long to be a real offset counts as the end of
    any file (and never reaches Python's limit on int() of huge strings).
    """
    if len(digits) > 18:
        return 10**18
    return int(digits)


def _parse_ranges(header: bytes, size: int) -> list[tuple[int, int]] | None:
    """
    Parse a C{Range} header against a file of C{size} bytes.

    @return: the satisfiable ranges as C{(first, last)} byte positions,
        sorted and merged; C{[]} when none is satisfiable; L{None} when the
        header is malformed, too fragmented or covers the whole file, in
        which case it is to be ignored (RFC 9110 section 14.2).
    """
    unit, _, spec = header.partition(b"=")
    if unit.strip().lower() != b"bytes" or not spec:
        return None
    parts = [part.strip() for part in spec.split(b",")]
    parts = [part for part in parts if part]  # empty list elements are allowed
    if not parts or len(parts) > _MAX_RANGES * 4:
        return None
    ranges = []
    for part in parts:
        first_text, dash, last_text = part.partition(b"-")
        if not dash or not (first_text or last_text):
            return None
        if not all(text.isdigit() for text in (first_text, last_text) if text):
            return None
        if not first_text:
            # A suffix range: the last N bytes.
            length = _position(last_text)
            if length == 0:
                continue
            ranges.append((max(size - length, 0), size - 1))
            continue
        first = _position(first_text)
        last = size - 1
        if last_text:
            last = _position(last_text)
            if last < first:
                return None
        if first < size:
            ranges.append((first, min(last, size - 1)))
    merged: list[tuple[int, int]] = []
    for first, last in sorted(ranges):
        if merged and first <= merged[-1][1] + 1:
            merged[-1] = (merged[-1][0], max(merged[-1][1], last))
        else:
            merged.append((first, last))
    if len(merged) > _MAX_RANGES:
        return None
    if merged == [(0, size - 1)]:
        return None
    return merged


def _etag_matches(header: bytes, etag: bytes) -> bool:
    """
    Weak comparison of an C{If-None-Match} list with our tag.
    """
    for candidate in header.split(b","):
        tag = candidate.strip()
        if tag == b"*" or tag.removeprefix(b"W/") == etag:
            return True
    return False


def _http_date(header: bytes | None) -> float | None:
    if not header:
        return None
    try:
        return parsedate_to_datetime(header.decode("latin-1")).timestamp()
    except (TypeError, ValueError, IndexError):
        return None


@dataclass(frozen=True)
class Refused:
    """
    Why a path below a static route is not served.

    @ivar status: 400 (a path no file can have) or 404.
    @ivar reason: what is wrong, for C{txrouter explain}.
    """

    status: int
    reason: str


def child_path(
    root: str, folder: str, segment: bytes, is_folder: bool
) -> str | Refused:
    """
    The file or folder that one (decoded) path segment names in C{folder},
    or why it is refused: a NUL or non-UTF-8 byte, a dot-segment or
    dotfile, a separator inside the segment (C{..%2f}), or a path that
    leads outside the route's folder (a symlink), is missing, or is not a
    regular file or folder (a FIFO or device would block or leak). An
    empty segment names the folder's C{index.html}.

    @param root: the route's folder, with symlinks resolved.
    @param is_folder: whether C{folder} is a folder.
    """
    if b"\x00" in segment:
        return Refused(400, "a NUL byte in the path")
    try:
        name = segment.decode("utf-8")
    except UnicodeDecodeError:
        return Refused(400, "the path is not UTF-8")
    if name in (".", ".."):
        return Refused(404, f"the dot-segment {name!r} (path traversal)")
    if "/" in name or "\\" in name:
        return Refused(404, f"{name!r} hides a separator (path traversal)")
    if name.startswith("."):
        return Refused(404, f"{name!r} is hidden (its name starts with '.')")
    if not is_folder:
        return Refused(404, f"{folder!r} is a file, not a folder")
    path = os.path.join(folder, name or "index.html")
    real = os.path.realpath(path)
    if real != root and not real.startswith(root + os.sep):
        return Refused(404, f"{path!r} leads outside the route's folder, to {real!r}")
    try:
        mode = os.stat(real).st_mode
    except OSError:
        return Refused(404, f"{path!r} does not exist")
    # Only files and folders: opening a FIFO or a device would block or
    # read what was never meant to be served.
    if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
        return Refused(404, f"{path!r} is not a regular file or folder")
    return path


class StaticFiles(static.File):
    """
    One file or folder below a static route's root.

    @ivar root: the route's root folder, with symlinks resolved.
    @ivar cache: C{Cache-Control} max-age in seconds, or L{None}.
    """

    contentEncodings: dict[str, str] = {}  # serve .gz files as they are
    contentTypes = {**static.File.contentTypes, **_WEB_TYPES}
    indexNames = ["index.html"]
    childNotFound = _NOT_FOUND  # type: ignore[assignment]
    root: str
    cache: int | None

    @classmethod
    def for_root(cls, root: Path, cache: int | None) -> StaticFiles:
        """
        The resource for a static route whose folder is C{root}.
        """
        files = cls(str(root), defaultType="application/octet-stream")
        files.root = os.path.realpath(root)
        files.cache = cache
        return files

    def createSimilarFile(self, path: str) -> StaticFiles:
        similar = type(self)(path, self.defaultType)
        similar.root = self.root
        similar.cache = self.cache
        return similar

    def directoryListing(self) -> resource.IResource:
        return _NOT_FOUND

    def getChild(self, path: bytes, request: IRequest) -> resource.IResource:
        found = child_path(self.root, self.path, path, self.isdir())
        if isinstance(found, Refused):
            return _BAD_PATH if found.status == 400 else _NOT_FOUND
        return self.createSimilarFile(found)

    def render_GET(self, request: Any) -> bytes | int:
        self.restat(False)
        if not self.exists():
            return _NOT_FOUND.render(request)  # type: ignore[no-any-return]
        if self.isdir():
            return self.redirect(request)  # type: ignore[no-any-return]
        if self.type is None:
            self.type, self.encoding = static.getTypeAndEncoding(
                self.basename(),
                self.contentTypes,
                self.contentEncodings,
                self.defaultType,
            )
        size = self.getsize()
        mtime = self.getModificationTime()
        etag = b'"%x-%x"' % (int(mtime * 1_000_000), size)
        request.setHeader(b"accept-ranges", b"bytes")
        request.setHeader(b"etag", etag)
        request.setHeader(b"last-modified", http.datetimeToString(mtime))
        request.setHeader(b"x-content-type-options", b"nosniff")
        if self.cache is not None:
            request.setHeader(b"cache-control", b"max-age=%d" % (self.cache,))
        if self._not_modified(request, etag, mtime):
            request.setResponseCode(http.NOT_MODIFIED)
            return b""
        try:
            file = self.openForReading()
        except OSError:
            return _FORBIDDEN.render(request)  # type: ignore[no-any-return]
        ranges = self._wanted_ranges(request, etag, mtime, size)
        if ranges == []:
            file.close()
            request.setResponseCode(http.REQUESTED_RANGE_NOT_SATISFIABLE)
            request.setHeader(b"content-range", b"bytes */%d" % (size,))
            request.setHeader(b"content-length", b"0")
            return b""
        if request.method == b"HEAD":
            file.close()
            self._setContentHeaders(request, size)
            return b""
        producer: static.StaticProducer
        if ranges is None:
            self._setContentHeaders(request, size)
            producer = static.NoRangeStaticProducer(request, file)
        elif len(ranges) == 1:
            first, last = ranges[0]
            request.setResponseCode(http.PARTIAL_CONTENT)
            request.setHeader(b"content-range", b"bytes %d-%d/%d" % (first, last, size))
            self._setContentHeaders(request, last - first + 1)
            producer = static.SingleRangeStaticProducer(
                request, file, first, last - first + 1
            )
        else:
            producer = self._multipart(request, file, ranges, size)
        producer.start()
        return NOT_DONE_YET

    render_HEAD = render_GET

    def _not_modified(self, request: Any, etag: bytes, mtime: float) -> bool:
        lines = request.requestHeaders.getRawHeaders(b"if-none-match")
        if lines:
            # Repeated header lines are one comma-separated list.
            return _etag_matches(b",".join(lines), etag)
        since = _http_date(request.getHeader(b"if-modified-since"))
        return since is not None and int(mtime) <= since

    def _wanted_ranges(
        self, request: Any, etag: bytes, mtime: float, size: int
    ) -> list[tuple[int, int]] | None:
        header = request.getHeader(b"range")
        if header is None or size == 0:
            return None
        if_range = request.getHeader(b"if-range")
        if if_range is not None:
            if if_range.startswith((b'"', b"W/")):
                if if_range != etag:
                    return None
            elif _http_date(if_range) != float(int(mtime)):
                return None
        return _parse_ranges(header, size)

    def _multipart(
        self, request: Any, file: Any, ranges: list[tuple[int, int]], size: int
    ) -> static.StaticProducer:
        boundary = b"%x%x" % (time.time_ns(), os.getpid())
        content_type = (self.type or self.defaultType).encode("ascii")
        parts = []
        length = 0
        for first, last in ranges:
            separator = (
                b"\r\n--%s\r\nContent-Type: %s\r\nContent-Range: bytes %d-%d/%d\r\n\r\n"
                % (boundary, content_type, first, last, size)
            )
            parts.append((separator, first, last - first + 1))
            length += len(separator) + last - first + 1
        closing = b"\r\n--%s--\r\n" % (boundary,)
        parts.append((closing, 0, 0))
        request.setResponseCode(http.PARTIAL_CONTENT)
        request.setHeader(
            b"content-type", b'multipart/byteranges; boundary="%s"' % (boundary,)
        )
        request.setHeader(b"content-length", b"%d" % (length + len(closing),))
        return static.MultipleRangeStaticProducer(request, file, parts)
