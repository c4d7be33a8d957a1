"""A thin HTTP client for the CLI; problem+json errors become CliError.

Standard library only, because the CLI's start-up time is its latency: httpx
(and the TLS context it builds for every client) took longer to import and
set up than the whole command may take. :func:`_exchange` is the one place
that speaks HTTP/1.1 on a socket, and the one that speaks TLS: for an https
URL it imports ``ssl`` (only then: ~10 ms) and verifies the server's
certificate against DOCKYARD_CA, or the system's store when that is unset.
Plain http goes through ``_socket``, the C module under ``socket``: the
``socket`` module's import (selectors, and enums made of every constant) was
~4 ms of every command, for create_connection and makefile (_connect, _Reader).
"""

from __future__ import annotations

import _socket
import json as jsonlib
import os

# typing costs ~2 ms of every command's start-up; mypy reads this name as typing's own
TYPE_CHECKING = False
if TYPE_CHECKING:
    from pathlib import Path
    from typing import Any, BinaryIO

TIMEOUT = 60.0
_PATH_SAFE = "/?&=%:@+,;!$'()*~"
# RFC 3986's unreserved characters: never percent-encoded
_UNRESERVED = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-~")


class CliError(Exception):
    """Printed as ``error: <message>`` and exit status 1; never a traceback."""


class Response:
    def __init__(self, status: int, content: bytes, headers: dict[str, str] | None = None) -> None:
        self.status_code, self.content, self.headers = status, content, headers or {}

    def json(self) -> Any:
        return jsonlib.loads(self.content)

    @property
    def text(self) -> str:
        return self.content.decode(errors="replace")


class Api:
    def __init__(
        self, url: str | None = None, token: str | None = None, ca: str | None = None
    ) -> None:
        url = url or os.environ.get("DOCKYARD_URL")
        token = token or os.environ.get("DOCKYARD_TOKEN")
        self._ca = ca or os.environ.get("DOCKYARD_CA") or None
        if not url or not token:
            raise CliError(
                "set DOCKYARD_URL and DOCKYARD_TOKEN (`source STATE_DIR/admin.env` after "
                "`dockyard up`)"
            )
        self.url = url.rstrip("/")
        parts = _split_url(self.url)
        if parts is None:
            raise CliError(
                f"DOCKYARD_URL must look like http://HOST:PORT or https://HOST:PORT, not {url!r}"
            )
        self._tls, self._netloc, self._host, self._port, path = parts
        if self._tls and self._ca and not os.path.isfile(self._ca):
            raise CliError(f"DOCKYARD_CA {self._ca}: no such file; `source STATE_DIR/admin.env`")
        self._prefix = path + "/v1"
        self._token = token

    def call(
        self,
        method: str,
        path: str,
        json: Any = None,
        content: BinaryIO | None = None,
        headers: dict[str, str] | None = None,
    ) -> Any:
        return self.versioned(method, path, json, content, headers)[0]

    def versioned(
        self,
        method: str,
        path: str,
        json: Any = None,
        content: BinaryIO | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[Any, str]:
        """As ``call``, with the answer's version (its ETag, "" if none): an instance's
        answer names the version its watch starts from."""
        r = self._request(method, path, json, content, headers)
        if r.status_code >= 400:
            raise CliError(_problem(r))
        etag = r.headers.get("etag", "").removeprefix("W/").strip('"')
        return (r.json() if r.content else None), etag

    def get(self, path: str) -> Any:
        return self.call("GET", path)

    def post(self, path: str, body: Any = None) -> Any:
        return self.call("POST", path, json=body)

    def patch(self, path: str, body: Any) -> Any:
        return self.call("PATCH", path, json=body)

    def delete(self, path: str) -> Any:
        return self.call("DELETE", path)

    def upload(self, path: str, file: Path) -> Any:
        with file.open("rb") as f:
            return self.call(
                "PUT", path, content=f, headers={"content-type": "application/octet-stream"}
            )

    def fetch(self, path: str) -> bytes:
        """GET a download's raw bytes."""
        r = self._request("GET", path, None, None, None, timeout=300)
        if r.status_code >= 400:
            raise CliError(_problem(r))
        return r.content

    def find(self, path: str) -> Any:
        """GET, or None when the resource does not exist (404)."""
        r = self._request("GET", path, None, None, None)
        if r.status_code == 404:
            return None
        if r.status_code >= 400:
            raise CliError(_problem(r))
        return r.json()

    def long_poll(self, path: str, params: dict[str, Any], hold: float) -> tuple[int, Any]:
        """GET that the server may hold ``hold`` seconds: (status, body); 404 and 410
        come back as statuses (the caller decides what a missing route or a deleted
        resource means), other errors raise CliError."""
        query = "?" + encode_query(params) if params else ""
        r = self._request("GET", path + query, None, None, None, timeout=hold + 30)
        if r.status_code >= 400 and r.status_code not in (404, 410):
            raise CliError(_problem(r))
        return r.status_code, (r.json() if r.content else None)

    def exists(self, path: str) -> bool:
        return self.find(path) is not None

    def _request(
        self,
        method: str,
        path: str,
        json: Any,
        content: BinaryIO | None,
        headers: dict[str, str] | None,
        timeout: float = TIMEOUT,
    ) -> Response:
        head = {
            "host": self._netloc,
            "authorization": f"Bearer {self._token}",
            "accept": "application/json",
            "user-agent": "dockyard-cli",
            "connection": "close",
        }
        body: bytes | BinaryIO = b"" if content is None else content
        if json is not None:
            body = jsonlib.dumps(json).encode()
            head["content-type"] = "application/json"
        head.update(headers or {})
        target = quote(self._prefix + path, safe=_PATH_SAFE)
        tls = _Tls(self._ca) if self._tls else None
        try:
            return _exchange((self._host, self._port), method, target, head, body, timeout, tls)
        except (OSError, ValueError) as exc:
            if type(exc).__name__ == "SSLCertVerificationError":
                trust = f"DOCKYARD_CA ({self._ca})" if self._ca else "the system's CA store"
                raise CliError(
                    f"the server at {self.url} is not who it claims: its certificate is not "
                    f"trusted by {trust} ({getattr(exc, 'verify_message', exc)}); check "
                    "DOCKYARD_URL and DOCKYARD_CA (`source STATE_DIR/admin.env`)"
                ) from exc
            raise CliError(f"cannot reach the server at {self.url}: {exc}") from exc


def quote(text: str, safe: str = "/") -> str:
    """``text`` percent-encoded as UTF-8 but for unreserved characters and ``safe``
    (urllib.parse.quote's rule; that module and the ipaddress module it imports cost
    every command ~3 ms)."""
    keep = _UNRESERVED.union(safe.encode())
    return "".join(chr(b) if b in keep else f"%{b:02X}" for b in text.encode())


def encode_query(params: dict[str, Any]) -> str:
    """``k=v&...`` as urllib.parse.urlencode writes it: each key and value quoted
    whole, a space as ``+``."""
    return "&".join(f"{_quote_plus(str(k))}={_quote_plus(str(v))}" for k, v in params.items())


def _quote_plus(text: str) -> str:
    return quote(text, " ").replace(" ", "+")


def _split_url(url: str) -> tuple[bool, str, str, int, str] | None:
    """(https?, HOST[:PORT] as written, host, port, path) of an http(s) URL with no
    user, query or fragment, or None when it is not one. The default port is the
    scheme's; an IPv6 address is written in brackets."""
    scheme, sep, rest = url.partition("://")
    netloc, slash, path = rest.partition("/")
    if not sep or scheme.lower() not in ("http", "https") or any(c in rest for c in "@?#"):
        return None
    if netloc.startswith("["):
        host, bracket, after = netloc[1:].partition("]")
        port_text = after.removeprefix(":")
        if not bracket or ":" not in host or after not in ("", ":" + port_text):
            return None
    else:
        host, _, port_text = netloc.partition(":")
    tls = scheme.lower() == "https"
    digits = port_text.isascii() and port_text.isdigit()  # "²" is a digit, not to int()
    port = (443 if tls else 80) if not port_text else int(port_text) if digits else 0
    if not host or not 0 < port < 65536:
        return None
    return tls, netloc, host.lower(), port, (slash + path).rstrip("/")


class _Tls:
    """Verify the server against ``ca`` (a PEM file), or the system's store."""

    def __init__(self, ca: str | None) -> None:
        self.ca = ca


def _exchange(
    address: tuple[str, int],
    method: str,
    target: str,
    head: dict[str, str],
    body: bytes | BinaryIO,
    timeout: float,
    tls: _Tls | None = None,
) -> Response:
    """One request on a new connection, the whole answer read (``connection: close``);
    over TLS when ``tls`` is given, the server's certificate and name verified."""
    size = len(body) if isinstance(body, bytes) else os.fstat(body.fileno()).st_size
    head["content-length"] = str(size)
    lines = [f"{method} {target} HTTP/1.1", *(f"{k}: {v}" for k, v in head.items()), "", ""]
    host, port = address
    # an ASCII name or address goes as bytes: getaddrinfo passes a str through the idna
    # codec, whose import (with stringprep and unicodedata) is ~2-3 ms of every command
    name: str | bytes = host.encode("ascii") if host.isascii() else host
    if tls is None:
        sock: Any = _connect(name, port, timeout)
    else:
        import socket  # ssl wraps socket.socket (and imports socket anyway)
        import ssl  # only for https: the CLI's start-up on plain http does not pay for it

        sock = socket.create_connection((name, port), timeout=timeout)  # type: ignore[arg-type]
        context = ssl.create_default_context(cafile=tls.ca)
        try:
            sock = context.wrap_socket(sock, server_hostname=address[0])
        except BaseException:
            sock.close()
            raise
    try:
        sock.sendall("\r\n".join(lines).encode("latin-1"))
        if isinstance(body, bytes):
            sock.sendall(body)
        else:
            while chunk := body.read(1 << 20):
                sock.sendall(chunk)
        return _read_response(_Reader(sock), method)
    finally:
        sock.close()


def _connect(name: str | bytes, port: int, timeout: float) -> _socket.socket:
    """A TCP connection to the first of ``name``'s addresses that answers (what
    socket.create_connection does), reads and writes bounded by ``timeout``."""
    error: OSError = OSError(f"{name!r} has no address")
    for family, kind, proto, _, address in _socket.getaddrinfo(name, port, 0, _socket.SOCK_STREAM):
        sock = _socket.socket(family, kind, proto)
        try:
            sock.settimeout(timeout)
            sock.connect(address)
            return sock
        except OSError as exc:
            sock.close()
            error = exc
    raise error


class _Reader:
    """Buffered reads of an answer from a socket (socket.makefile's job)."""

    def __init__(self, sock: Any) -> None:
        self._sock, self._buf = sock, bytearray()

    def _more(self) -> bool:
        data = self._sock.recv(1 << 16)
        self._buf += data
        return bool(data)

    def readline(self, limit: int = 65537) -> bytes:
        while b"\n" not in self._buf[:limit] and len(self._buf) < limit and self._more():
            pass
        end = self._buf.find(b"\n", 0, limit)
        return self._take(end + 1 if end >= 0 else limit)

    def read(self, size: int = -1) -> bytes:
        while (size < 0 or len(self._buf) < size) and self._more():
            pass
        return self._take(len(self._buf) if size < 0 else size)

    def _take(self, size: int) -> bytes:
        out = bytes(self._buf[:size])
        del self._buf[:size]
        return out


def _read_response(f: _Reader, method: str) -> Response:
    status_line = f.readline(65537).decode("latin-1").split(None, 2)
    if len(status_line) < 2 or not status_line[0].startswith("HTTP/"):
        raise ValueError(f"not an HTTP answer: {' '.join(status_line)[:80]!r}")
    status = int(status_line[1])
    fields: dict[str, str] = {}
    while (line := f.readline(65537)) not in (b"\r\n", b"\n", b""):
        name, _, value = line.decode("latin-1").partition(":")
        fields[name.strip().lower()] = value.strip()
    if method == "HEAD" or status in (204, 304) or status < 200:
        return Response(status, b"", fields)
    if "chunked" in fields.get("transfer-encoding", "").lower():
        return Response(status, _read_chunked(f), fields)
    if "content-length" in fields:
        want = int(fields["content-length"])
        content = f.read(want)
        if len(content) != want:
            raise ValueError(f"the answer ended after {len(content)} of {want} bytes")
        return Response(status, content, fields)
    return Response(status, f.read(), fields)


def _read_chunked(f: _Reader) -> bytes:
    chunks = []
    while size := int(f.readline(65537).split(b";")[0].strip() or b"0", 16):
        chunks.append(f.read(size))
        f.readline()
    while f.readline() not in (b"\r\n", b"\n", b""):
        pass  # trailer fields
    return b"".join(chunks)


def _problem(r: Response) -> str:
    try:
        body = r.json()
    except ValueError:
        return f"HTTP {r.status_code}: {r.text[:300]}"
    detail = body.get("detail") if isinstance(body, dict) else None
    return f"{detail or body} (HTTP {r.status_code})"
