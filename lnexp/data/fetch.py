"""Downloading one file: written atomically, checked before it is trusted, quick to fail.

:func:`download` streams a URL into ``<name>.<random>.part`` beside the destination, runs the
caller's check on the complete file, and only then renames it to the destination name
(``os.replace``, atomic). Whatever stops a download (a network error, a failed check, Ctrl-C,
``kill -9``) therefore never leaves a file under the destination name: a file there is complete
and passed its check. ``.part`` files left by killed downloads are never read; the next download
of the same file removes those untouched for :data:`STALE_PART_S` seconds.

Nothing is retried and nothing waits long: resolving the host name, connecting and every read
each get :data:`TIMEOUT_S` seconds. Failures raise :class:`DownloadError`, whose message names
the URL and the cause in a few words; callers add what to do about it in a
:class:`~lnexp.errors.UserError`. Errors of the local disk (a directory that cannot be written)
are left as the ``OSError`` they are.

HTTP and HTTPS go through :mod:`urllib` (which honours ``https_proxy``, ``http_proxy`` and
``no_proxy``); ``file://`` URLs read a copy on a mounted disk.
"""

from __future__ import annotations

import dataclasses
import glob
import http.client
import os
import secrets
import socket
import ssl
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path

TIMEOUT_S = 10.0  # Name lookup, connection, and each read.
STALE_PART_S = 300.0  # A .part file untouched this long belongs to a download that died.
CHUNK_BYTES = 1 << 16
USER_AGENT = "lnexp/0.1 (research code reproducing Layer Normalization; Python urllib)"

Check = Callable[[Path], None]
"""Checks a complete download before it is trusted; raises ``ValueError`` saying what is
wrong."""


class DownloadError(Exception):
    """A file could not be downloaded: ``url``, ``reason`` (a few words), and whether the host
    could not be reached at all (``unreachable``: no network, name lookup failed, connection
    refused or timed out), as opposed to answering with an error or bad content."""

    def __init__(self, url: str, reason: str, *, unreachable: bool = False):
        super().__init__(f"{url}: {reason}")
        self.url = url
        self.reason = reason
        self.unreachable = unreachable


@dataclasses.dataclass
class Report:
    """What a command that fetches several things did: ``fetched`` and ``present`` (already
    there, left alone) name them; ``failed`` pairs a name with the reason."""

    fetched: list[str] = dataclasses.field(default_factory=list)
    present: list[str] = dataclasses.field(default_factory=list)
    failed: list[tuple[str, str]] = dataclasses.field(default_factory=list)


def join_url(base: str, name: str) -> str:
    """``base`` (with or without a trailing ``/``) followed by the file ``name``."""
    return base.rstrip("/") + "/" + name


def download(
    url: str,
    dest: str | os.PathLike[str],
    *,
    check: Check | None = None,
    progress: bool = True,
    desc: str | None = None,
    timeout_s: float = TIMEOUT_S,
) -> int:
    """Downloads ``url`` to ``dest`` through a temporary file, atomically.

    Args:
        url: An ``http://``, ``https://`` or ``file://`` URL.
        dest: The file to create or replace; its directory must exist.
        check: Run on the complete temporary file; a ``ValueError`` it raises rejects the
            download (nothing is written under ``dest``).
        progress: A progress bar on stderr (only when stderr is a terminal).
        desc: The progress bar's label (default: the file name).
        timeout_s: Seconds for the name lookup, the connection and each read.

    Returns:
        The number of bytes written.

    Raises:
        DownloadError: The server cannot be reached, answers with an error, closes the
            connection early, or sends a file that fails ``check``.
        OSError: ``dest``'s directory cannot be written.
    """
    import tqdm

    dest = Path(dest)
    _remove_stale_parts(dest)
    response = _open(url, timeout_s)
    part = dest.with_name(f"{dest.name}.{secrets.token_hex(4)}.part")
    try:
        with response:
            expected = _content_length(response)
            # os.open rather than tempfile: the file gets the usual permissions (umask), not 0600.
            fd = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
            with (
                os.fdopen(fd, "wb") as out,
                tqdm.tqdm(
                    total=expected,
                    unit="B",
                    unit_scale=True,
                    unit_divisor=1024,
                    desc=desc or dest.name,
                    disable=None if progress else True,  # None: only on a terminal.
                ) as bar,
            ):
                received = 0
                while chunk := _read(response, url, timeout_s):
                    out.write(chunk)
                    received += len(chunk)
                    bar.update(len(chunk))
                out.flush()
                os.fsync(out.fileno())
        if expected is not None and received != expected:
            raise DownloadError(
                url, f"the connection closed after {received:,} of {expected:,} bytes"
            )
        if check is not None:
            try:
                check(part)
            except ValueError as e:
                raise DownloadError(url, str(e)) from e
        os.replace(part, dest)
    finally:
        part.unlink(missing_ok=True)  # Gone already after os.replace.
    return received


def _open(url: str, timeout_s: float):
    """The response to a GET of ``url``, or a DownloadError saying why there is none."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https", "file"):
        raise DownloadError(url, "not an http://, https:// or file:// URL")
    if parts.scheme != "file" and parts.hostname and not _proxied(parts.scheme, parts.hostname):
        _resolve(url, parts.hostname, parts.port or (443 if parts.scheme == "https" else 80))
    request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
    try:
        return urllib.request.urlopen(request, timeout=timeout_s)
    except urllib.error.HTTPError as e:
        e.close()
        raise DownloadError(url, f"HTTP error {e.code} ({e.reason})") from None
    except urllib.error.URLError as e:
        raise DownloadError(url, _describe(e.reason, timeout_s), unreachable=True) from None
    except (OSError, http.client.HTTPException) as e:
        raise DownloadError(url, _describe(e, timeout_s), unreachable=True) from None


def _read(response, url: str, timeout_s: float) -> bytes:
    """The next chunk of the body (b"" at its end), or a DownloadError."""
    try:
        return response.read(CHUNK_BYTES)
    except (OSError, http.client.HTTPException) as e:
        raise DownloadError(url, f"the download broke off: {_describe(e, timeout_s)}") from None


def _proxied(scheme: str, host: str) -> bool:
    """Whether urllib sends requests for ``host`` through a proxy (which resolves it instead)."""
    return bool(urllib.request.getproxies().get(scheme)) and not urllib.request.proxy_bypass(host)


def _resolve(url: str, host: str, port: int) -> None:
    """Looks ``host`` up within TIMEOUT_S seconds (socket timeouts do not cover the lookup)."""
    outcome: list[BaseException | None] = []

    def lookup() -> None:
        try:
            socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
            outcome.append(None)
        except OSError as e:
            outcome.append(e)

    thread = threading.Thread(target=lookup, daemon=True)
    thread.start()
    thread.join(TIMEOUT_S)
    if not outcome:
        reason = f"looking up {host} took more than {TIMEOUT_S:.0f} s (no network access?)"
        raise DownloadError(url, reason, unreachable=True)
    if outcome[0] is not None:
        reason = f"cannot look up {host} ({_describe(outcome[0], TIMEOUT_S)}; no network access?)"
        raise DownloadError(url, reason, unreachable=True)


def _describe(error: object, timeout_s: float) -> str:
    """A few words for a network error."""
    if isinstance(error, TimeoutError | socket.timeout):
        return f"no answer within {timeout_s:.0f} s"
    if isinstance(error, ConnectionRefusedError):
        return "connection refused (nothing listens there)"
    if isinstance(error, socket.gaierror):
        return error.strerror or str(error)
    if isinstance(error, ssl.SSLError):
        return f"TLS error: {error.reason or error}"
    if isinstance(error, OSError) and error.strerror:
        return error.strerror[0].lower() + error.strerror[1:]
    return f"{type(error).__name__}: {error}" if str(error) else type(error).__name__


def _content_length(response) -> int | None:
    value = response.headers.get("Content-Length")
    return int(value) if value and value.isdigit() else None


def _remove_stale_parts(dest: Path) -> None:
    """Removes ``dest``'s ``.part`` files that no download has written to for a while."""
    now = time.time()
    for part in dest.parent.glob(f"{glob.escape(dest.name)}.*.part"):
        try:
            if now - part.stat().st_mtime > STALE_PART_S:
                part.unlink()
        except OSError:
            pass  # Another process took care of it, or we may not: harmless either way.
