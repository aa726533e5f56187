"""Fetching a user-given URL without letting it reach private networks (an SSRF guard).

Every hop is checked before any connection is made: the scheme must be http or https, and every address the
host resolves to must be public (not private, loopback, link-local, multicast, reserved or unspecified, for
IPv4 and IPv6, IPv4-mapped and NAT64 forms included). The connection then goes to the vetted address itself,
with the original name in the ``Host`` header and as the TLS server name (httpcore's ``sni_hostname``
request extension, which also drives certificate hostname checks), so a second DNS answer cannot swap in
another address (DNS rebinding). Redirects are followed by hand, each hop checked the same way. The whole
fetch, slow bodies included, ends by one deadline, and the body is cut off past a byte cap.

A URL whose host is not a valid name (bad IDNA such as ``xn--``, an empty label, a label over 63 characters) or
whose port is out of range is refused before anything is resolved. Certificates are checked against the system's
trust store, ``SSL_CERT_FILE`` and ``SSL_CERT_DIR`` included (an operator's private CA), with the certifi bundle
only where the system has no trust store at all.

Failures raise ``FetchError`` (or ``BlockedAddress``); callers translate them into the error tree, e.g.
``media.images`` into ``InvalidImage``.
"""

from __future__ import annotations

import contextlib
import functools
import http.cookiejar
import ipaddress
import os
import re
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
T = TypeVar("T")
Resolver = Callable[[str, int], Sequence[str]]
"""Maps (host, port) to the IP addresses (as text) a connection could go to."""

MAX_REDIRECTS = 5
_REDIRECTS = {301, 302, 303, 307, 308}
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
_SHARED = ipaddress.IPv4Network("100.64.0.0/10")  # carrier-grade NAT: not global, not "private" in 3.11
_LABEL = re.compile(r"[A-Za-z0-9_-]{1,63}", re.ASCII)  # one DNS label as it goes on the wire (A-labels for IDNA)


class FetchError(Exception):
    """A URL could not be fetched; the message says why, in words fit for the client."""

    def __init__(self, message: str, *, status_code: int | None = None, transient: bool = False) -> None:
        super().__init__(message)
        self.status_code = status_code  # the HTTP status the server answered, when it answered
        self.transient = transient  # a later try may work: the network, a timeout, a 5xx or 429


class BlockedAddress(FetchError):
    """A URL points to an address the guard refuses."""


class TooBig(FetchError):
    """The response body is over the byte cap."""


@dataclass(frozen=True)
class Fetched:
    """A fetched body and what the server said about it."""

    data: bytes
    content_type: str | None
    url: str  # the final URL, after redirects


def system_resolver(host: str, port: int) -> list[str]:
    """Resolve ``host`` with getaddrinfo; every address it may connect to, in order, without repeats."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    seen: dict[str, None] = {}
    for info in infos:
        seen.setdefault(str(info[4][0]), None)
    return list(seen)


def blocked_reason(address: IPAddress) -> str | None:
    """Why an address is refused (e.g. ``"loopback"``), or None when it is a public address."""
    if isinstance(address, ipaddress.IPv6Address):
        embedded = address.ipv4_mapped or (
            ipaddress.IPv4Address(int(address) & 0xFFFFFFFF) if address in _NAT64 else None
        )
        if embedded is not None:
            return blocked_reason(embedded)
        if address.sixtofour is not None:
            reason = blocked_reason(address.sixtofour)
            if reason is not None:
                return reason
        if address.teredo is not None:
            reason = blocked_reason(address.teredo[1])
            if reason is not None:
                return reason
    checks = (
        ("unspecified", address.is_unspecified),
        ("loopback", address.is_loopback),
        ("link-local", address.is_link_local),
        ("multicast", address.is_multicast),
        ("private", address.is_private),
        ("reserved", address.is_reserved),
        ("shared (carrier-grade NAT)", isinstance(address, ipaddress.IPv4Address) and address in _SHARED),
        ("not globally routable", not address.is_global),
    )
    for name, hit in checks:
        if hit:
            return name
    return None


def parse_networks(networks: Iterable[str | IPNetwork]) -> tuple[IPNetwork, ...]:
    """Parse CIDR strings (``"10.1.0.0/16"``) into networks; a bare address is a one-address network."""
    return tuple(
        n if isinstance(n, ipaddress.IPv4Network | ipaddress.IPv6Network) else ipaddress.ip_network(n) for n in networks
    )


@dataclass(frozen=True)
class Target:
    """One vetted hop: where to connect and how to name the server."""

    url: httpx.URL  # as the user (or the redirect) gave it
    address: str  # the vetted IP to connect to

    @property
    def connect_url(self) -> httpx.URL:
        """The URL with the host replaced by the vetted address."""
        return self.url.copy_with(host=self.address)

    @property
    def host_header(self) -> str:
        """The Host header the server expects (name, and port when it is not the scheme's default)."""
        return self.url.netloc.decode("ascii")


def vet_url(
    url: str | httpx.URL,
    *,
    allow_private: bool = False,
    allowed_networks: Sequence[IPNetwork] = (),
    resolver: Resolver | None = None,
    resolve_timeout_s: float | None = None,
) -> Target:
    """Check one hop (scheme, host, every resolved address) and pick the address to connect to."""
    try:
        parsed = httpx.URL(url) if isinstance(url, str) else url
    except httpx.InvalidURL as exc:
        raise FetchError(f"is not a valid URL ({exc})") from exc
    if parsed.scheme not in ("http", "https"):
        raise FetchError("must use http or https")
    wire_host = parsed.raw_host.decode("ascii", errors="replace")
    shown = repr(wire_host if len(wire_host) <= 80 else wire_host[:77] + "...")
    try:
        host = parsed.host  # decodes IDNA A-labels ("xn--…"), which fails on malformed ones
    except (UnicodeError, ValueError) as exc:  # idna.IDNAError is a UnicodeError
        raise FetchError(f"has an invalid host name: {shown} is not valid IDNA ({exc})") from exc
    if not host:
        raise FetchError("has no host name")
    if parsed.port is not None and not 0 < parsed.port < 65536:
        raise FetchError(f"has an invalid port ({parsed.port}); a port is 1 to 65535")
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    addresses: list[IPAddress]
    try:
        addresses = [ipaddress.ip_address(host)]
    except ValueError:
        addresses = []
    if not addresses:
        problem = _host_name_problem(wire_host)
        if problem is not None:
            raise FetchError(f"has an invalid host name: {shown} {problem}")
        # A name, or a numeric form ipaddress does not take ("2130706433", "127.1"): getaddrinfo reads
        # those the way the socket layer would, so they are checked as what they really connect to.
        try:
            answers = _resolve(resolver or system_resolver, host, port, resolve_timeout_s)
        except TimeoutError as exc:
            raise FetchError(f"could not be fetched: resolving {host!r} took too long") from exc
        except (OSError, UnicodeError) as exc:
            raise FetchError(f"could not be fetched: the host {host!r} could not be resolved") from exc
        try:
            addresses = [ipaddress.ip_address(a) for a in answers]
        except ValueError as exc:
            raise FetchError(f"could not be fetched: bad address for {host!r} ({exc})") from exc
        if not addresses:
            raise FetchError(f"could not be fetched: the host {host!r} could not be resolved")
    if not allow_private:
        for address in addresses:
            reason = blocked_reason(address)
            if reason is not None and not any(address in net for net in allowed_networks):
                where = f"{host} is {reason}" if str(address) == host else f"{host} resolves to {address}, {reason}"
                raise BlockedAddress(
                    f"points to a private, loopback or link-local address, which is not allowed ({where})"
                )
    # Connect to the first answer, the one getaddrinfo ranks best; all of them passed the check.
    return Target(url=parsed, address=str(addresses[0]))


def _host_name_problem(name: str) -> str | None:
    """Why ``name`` (ASCII, as sent on the wire) cannot be a DNS host name, or None when it can."""
    labels = name.removesuffix(".").split(".")  # one trailing dot: a fully qualified name
    if len(name.removesuffix(".")) > 253:
        return "is longer than 253 characters"
    for label in labels:
        if not label:
            return "has an empty label"
        if len(label) > 63:
            return "has a label longer than 63 characters"
        if not _LABEL.fullmatch(label):
            return "holds characters a host name cannot"
    return None


def tls_context() -> ssl.SSLContext:
    """The context that checks servers' certificates: the system's trust store, as OpenSSL finds it.

    ``ssl.create_default_context`` loads OpenSSL's default verify paths, which honour ``SSL_CERT_FILE`` and
    ``SSL_CERT_DIR``; so a private CA an operator installed in the system store or names there is trusted. Only
    when the system has no trust store at all (a bare container) is the certifi bundle httpx ships used instead.
    One context per setting of those variables, shared by every fetch (building one reads the whole store).
    """
    return _tls_context(os.environ.get("SSL_CERT_FILE"), os.environ.get("SSL_CERT_DIR"))


@functools.lru_cache(maxsize=4)
def _tls_context(cert_file: str | None, cert_dir: str | None) -> ssl.SSLContext:
    del cert_file, cert_dir  # the cache key: OpenSSL reads the variables itself
    context = ssl.create_default_context()
    paths = ssl.get_default_verify_paths()
    if paths.cafile is None and paths.capath is None:
        import certifi  # httpx's own dependency

        context.load_verify_locations(cafile=certifi.where())
    return context


def fetch(
    url: str,
    *,
    allow_private: bool = False,
    allowed_networks: Sequence[IPNetwork] = (),
    timeout_s: float = 10.0,
    max_bytes: int = 10 * 1024 * 1024,
    max_redirects: int = MAX_REDIRECTS,
    resolver: Resolver | None = None,
    transport: httpx.BaseTransport | None = None,
    headers: dict[str, str] | None = None,
) -> Fetched:
    """GET ``url`` through the guard: vetted hops, manual redirects, one deadline, a byte cap."""

    def read(response: httpx.Response, target: Target, deadline: _Deadline) -> Fetched:
        data = b"".join(_capped(response, max_bytes, deadline))
        return Fetched(data=data, content_type=response.headers.get("content-type"), url=str(target.url))

    return _guarded_get(
        url,
        read,
        accept="image/png,image/jpeg;q=0.9,*/*;q=0.1",
        allow_private=allow_private,
        allowed_networks=allowed_networks,
        timeout_s=timeout_s,
        max_redirects=max_redirects,
        resolver=resolver,
        transport=transport,
        headers=headers,
    )


def fetch_to_file(
    url: str,
    path: Path,
    *,
    allow_private: bool = False,
    timeout_s: float = 600.0,
    max_bytes: int = 1024 * 1024 * 1024,
    accept: str = "video/mp4,video/*;q=0.9,*/*;q=0.1",
    resolver: Resolver | None = None,
) -> int:
    """GET ``url`` through the guard straight into ``path`` (streamed, capped); answer the byte count.

    The file is written whole or not at all: a failure leaves no file behind.
    """

    def save(response: httpx.Response, target: Target, deadline: _Deadline) -> int:
        total = 0
        try:
            with path.open("wb") as out:
                for chunk in _capped(response, max_bytes, deadline):
                    out.write(chunk)
                    total += len(chunk)
        except BaseException:
            path.unlink(missing_ok=True)
            raise
        return total

    return _guarded_get(
        url,
        save,
        accept=accept,
        allow_private=allow_private,
        allowed_networks=(),
        timeout_s=timeout_s,
        max_redirects=MAX_REDIRECTS,
        resolver=resolver,
        transport=None,
        headers=None,
    )


def _guarded_get(
    url: str,
    consume: Callable[[httpx.Response, Target, _Deadline], T],
    *,
    accept: str,
    allow_private: bool,
    allowed_networks: Sequence[IPNetwork],
    timeout_s: float,
    max_redirects: int,
    resolver: Resolver | None,
    transport: httpx.BaseTransport | None,
    headers: dict[str, str] | None,
) -> T:
    """Follow vetted hops to a 200 answer and hand its body to ``consume``, all within one deadline."""
    deadline = _Deadline(timeout_s)
    # Env proxies would resolve names themselves and bypass the pinning; cookies must never carry over.
    client = httpx.Client(
        transport=transport,
        verify=tls_context(),
        trust_env=False,
        follow_redirects=False,
        cookies=http.cookiejar.CookieJar(policy=http.cookiejar.DefaultCookiePolicy(allowed_domains=[])),
    )
    try:
        current: str | httpx.URL = url
        for _hop in range(max_redirects + 1):
            target = vet_url(
                current,
                allow_private=allow_private,
                allowed_networks=allowed_networks,
                resolver=resolver,
                resolve_timeout_s=max(0.0, deadline.remaining()),
            )
            response = _send(client, target, deadline, {**(headers or {}), "Accept": accept})
            try:
                if response.status_code in _REDIRECTS:
                    location = response.headers.get("location")
                    if not location:
                        raise FetchError(f"could not be fetched: HTTP {response.status_code} without a Location")
                    try:
                        current = target.url.join(location)
                    except httpx.InvalidURL as exc:
                        raise FetchError(f"could not be fetched: it redirects to an invalid URL ({exc})") from exc
                    continue
                if response.status_code != 200:
                    status = response.status_code
                    raise FetchError(
                        f"could not be fetched: the server answered HTTP {status}",
                        status_code=status,
                        transient=status >= 500 or status == 429,
                    )
                return consume(response, target, deadline)
            finally:
                response.close()
        raise FetchError(f"could not be fetched: more than {max_redirects} redirects")
    except httpx.HTTPError as exc:
        if deadline.expired():
            raise FetchError(f"could not be fetched within {timeout_s:g} s", transient=True) from exc
        raise FetchError(f"could not be fetched: {_describe(exc)}", transient=_untrusted(exc) is None) from exc
    finally:
        deadline.cancel()
        if transport is None:
            client.close()  # a caller's transport stays open for the caller to reuse


def post(
    url: str,
    content: bytes,
    *,
    headers: dict[str, str],
    allow_private: bool = False,
    timeout_s: float = 10.0,
    resolver: Resolver | None = None,
    transport: httpx.BaseTransport | None = None,
) -> int:
    """POST ``content`` to ``url`` through the guard (one vetted hop, redirects not followed); answer the status."""
    deadline = _Deadline(timeout_s)
    client = httpx.Client(transport=transport, verify=tls_context(), trust_env=False, follow_redirects=False)
    try:
        target = vet_url(
            url, allow_private=allow_private, resolver=resolver, resolve_timeout_s=max(0.0, deadline.remaining())
        )
        response = _send(client, target, deadline, headers, method="POST", content=content)
        response.close()  # only the status matters; a receiver's body is not read
        return response.status_code
    except httpx.HTTPError as exc:
        if deadline.expired():
            raise FetchError(f"got no answer within {timeout_s:g} s", transient=True) from exc
        raise FetchError(f"could not be reached: {_describe(exc)}", transient=_untrusted(exc) is None) from exc
    finally:
        deadline.cancel()
        if transport is None:
            client.close()


def _resolve(resolver: Resolver, host: str, port: int, timeout_s: float | None) -> Sequence[str]:
    if timeout_s is None:
        return resolver(host, port)
    # getaddrinfo cannot be interrupted; run it aside and stop waiting at the deadline. The thread is a
    # daemon so a hung lookup never holds up the process's exit.
    result: list[Sequence[str]] = []
    error: list[BaseException] = []

    def run() -> None:
        try:
            result.append(resolver(host, port))
        except BaseException as exc:
            error.append(exc)

    thread = threading.Thread(target=run, name="vidqueue-resolve", daemon=True)
    thread.start()
    thread.join(timeout_s)
    if error:
        raise error[0]
    if not result:
        raise TimeoutError(f"resolving {host} took more than {timeout_s:g} s")
    return result[0]


def _send(
    client: httpx.Client,
    target: Target,
    deadline: _Deadline,
    headers: dict[str, str],
    method: str = "GET",
    content: bytes | None = None,
) -> httpx.Response:
    remaining = deadline.remaining()
    if remaining <= 0:
        raise FetchError("could not be fetched within the time limit")
    extensions: dict[str, Any] = {"trace": deadline.trace}
    if target.url.scheme == "https":
        extensions["sni_hostname"] = target.url.raw_host.decode("ascii")  # the A-label form certificates name
    request = client.build_request(
        method,
        target.connect_url,
        content=content,
        headers={
            **headers,
            "Host": target.host_header,
            # Compressed bodies are fine (the cap counts decoded bytes) but identity keeps it simple.
            "Accept-Encoding": "identity",
        },
        timeout=httpx.Timeout(remaining),
        extensions=extensions,
    )
    try:
        return client.send(request, stream=True)
    except UnicodeError as exc:
        # httpx reads a redirect's Location even when it does not follow it, and a host there that is not valid
        # IDNA ("xn--") raises idna's error (a UnicodeError), not an httpx one; nothing else in a send decodes IDNA.
        raise FetchError(f"could not be fetched: it redirects to an invalid URL ({exc})") from exc


def _capped(response: httpx.Response, max_bytes: int, deadline: _Deadline) -> Iterator[bytes]:
    """The body's chunks, cut off past ``max_bytes`` (TooBig) or the deadline (a read timeout)."""
    length = response.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > max_bytes:
        raise TooBig(f"must be at most {format_bytes(max_bytes)}")
    total = 0
    for chunk in response.iter_bytes():
        total += len(chunk)
        if total > max_bytes:
            raise TooBig(f"must be at most {format_bytes(max_bytes)}")
        yield chunk
        if deadline.expired():
            raise httpx.ReadTimeout("deadline passed")
    if deadline.expired():
        raise httpx.ReadTimeout("deadline passed")


def format_bytes(n: int) -> str:
    """A byte count the way people say it: ``10 MB``, ``512 KB``, ``100 bytes``."""
    for unit, size in (("MB", 1024 * 1024), ("KB", 1024)):
        if n >= size and n % size == 0:
            return f"{n // size} {unit}"
    return f"{n} bytes"


def _untrusted(exc: BaseException) -> ssl.SSLCertVerificationError | None:
    """The certificate check that failed under an httpx error (httpx and httpcore chain it as the cause), if any."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, ssl.SSLCertVerificationError):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


def _describe(exc: httpx.HTTPError) -> str:
    if isinstance(exc, httpx.TimeoutException):
        return "the server did not answer in time"
    untrusted = _untrusted(exc)
    if untrusted is not None:
        why = untrusted.verify_message or str(untrusted)
        return f"the server's TLS certificate is not trusted ({why})"
    if isinstance(exc, httpx.ConnectError):
        return f"could not connect ({exc})"
    return f"{type(exc).__name__} ({exc})"


class _Deadline:
    """One deadline for a whole fetch.

    httpx timeouts bound each socket operation, not the total, so a server that drips a byte a second never
    trips them. A timer therefore shuts down the sockets of this fetch when the deadline passes; the blocked
    read returns at once and the fetch fails. httpcore's ``trace`` extension hands over each new stream.
    """

    def __init__(self, seconds: float) -> None:
        self._end = time.monotonic() + seconds
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        self._done = False
        self._fired = False
        self._timer = threading.Timer(max(0.0, seconds), self._fire)
        self._timer.daemon = True
        self._timer.start()

    def remaining(self) -> float:
        return self._end - time.monotonic()

    def expired(self) -> bool:
        return self._fired or self.remaining() <= 0

    def trace(self, event: str, info: dict[str, Any]) -> None:
        if event.endswith((".connect_tcp.complete", ".start_tls.complete")):
            stream = info.get("return_value")
            sock = stream.get_extra_info("socket") if stream is not None else None
            if isinstance(sock, socket.socket):
                with self._lock:
                    if self._fired:
                        _shutdown(sock)
                    else:
                        self._sockets.append(sock)

    def cancel(self) -> None:
        with self._lock:
            self._done = True
            self._sockets.clear()
        self._timer.cancel()

    def _fire(self) -> None:
        with self._lock:
            if self._done:
                return
            self._fired = True
            for sock in self._sockets:
                _shutdown(sock)


def _shutdown(sock: socket.socket) -> None:
    # The plain socket method, also for an SSLSocket: its own shutdown() drops the TLS object under a reader
    # in another thread; shutting the descriptor makes that reader see end-of-stream instead.
    with contextlib.suppress(OSError):  # already closed
        socket.socket.shutdown(sock, socket.SHUT_RDWR)
