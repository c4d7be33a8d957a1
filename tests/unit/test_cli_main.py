"""The CLI starts fast: a command imports only its own noun's module, no HTTP library."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dockyard.cli.client import Api, CliError, _split_url, encode_query, quote
from dockyard.cli.main import NOUNS, parser

HEAVY = ("httpx", "pydantic", "fastapi", "sqlalchemy", "dockyard.model", "dockyard.api", "typing")


def loaded_after(*argv: str) -> set[str]:
    """Modules a fresh interpreter holds after ``dockyard ARGV`` (against a closed port)."""
    code = (
        "import sys\nfrom dockyard.cli.main import main\n"
        f"try:\n    main({list(argv)!r})\nexcept SystemExit:\n    pass\n"
        "print(' '.join(sys.modules))"
    )
    env = {"DOCKYARD_URL": "http://127.0.0.1:9", "DOCKYARD_TOKEN": "t", "PATH": "/usr/bin:/bin"}
    env["PYTHONDONTWRITEBYTECODE"] = "1"  # leave no __pycache__ in the source tree
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    return set(out.stdout.split())


@pytest.mark.parametrize("noun", sorted(NOUNS))
def test_the_top_level_help_is_the_same_whichever_noun_is_built(noun):
    assert parser([noun]).format_help() == parser([]).format_help()


def test_help_and_server_list_import_no_http_library_model_or_other_noun():
    helped = loaded_after("--help")
    assert not {m for m in helped if m.startswith(HEAVY)}
    assert "dockyard.cli.servers" not in helped and "dockyard.cli.client" not in helped
    listed = loaded_after("server", "list")
    assert not {m for m in listed if m.startswith(HEAVY)}
    assert not {"urllib.parse", "ipaddress", "socket", "selectors"} & listed  # ~7 ms
    assert "dockyard.cli.servers" in listed and "dockyard.cli.catalog" not in listed


@pytest.mark.parametrize("noun", sorted(set(NOUNS) - {"lab"}))  # lab runs a cloud: root only
def test_every_nouns_commands_import_no_typing_pathlib_or_socket(noun):
    loaded = loaded_after(noun, "--help")
    assert not {m for m in loaded if m.startswith(HEAVY)}
    assert not {"pathlib", "urllib.parse", "socket", "shutil"} & loaded


class _Handler(BaseHTTPRequestHandler):
    seen: list[tuple[str, str, bytes]] = []

    def log_message(self, *args: object) -> None:
        pass

    def _answer(self) -> None:
        body = self.rfile.read(int(self.headers.get("content-length") or 0))
        self.seen.append((self.command, self.path, body))
        if self.path.endswith("/missing"):
            self._send(404, b'{"detail": "no such thing"}', "application/problem+json")
        elif "/watch?since=gone" in self.path:
            self._send(410, b'{"detail": "deleted"}', "application/problem+json")
        elif self.path.endswith("/broken"):
            self._send(502, b"<html>bad gateway</html>", "text/html")
        elif self.path.endswith("/chunked"):
            self.send_response(200)
            self.send_header("transfer-encoding", "chunked")
            self.end_headers()
            for part in (b'{"a": ', b"[1, 2]}"):
                self.wfile.write(b"%x\r\n%s\r\n" % (len(part), part))
            self.wfile.write(b"0\r\n\r\n")
        elif self.path == "/v1/instances":  # more than a pipe holds
            self._send(
                200,
                json.dumps([{"name": f"web{i}"} for i in range(20_000)]).encode(),
                "application/json",
            )
        elif self.command == "DELETE":
            self.send_response(204)
            self.end_headers()
        else:
            echo = {"auth": self.headers["authorization"], "got": body.decode()}
            self._send(200, json.dumps(echo).encode(), "application/json")

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _answer

    def _send(self, status: int, body: bytes, kind: str) -> None:
        self.send_response(status)
        self.send_header("content-type", kind)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@contextmanager
def http_server() -> Iterator[str]:
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{srv.server_address[1]}"
    finally:
        srv.shutdown()
        srv.server_close()


def test_the_client_sends_json_and_files_and_reads_every_answer_form(tmp_path):
    with http_server() as url:
        api = Api(url, "tok")
        assert api.post("/things", {"n": 1}) == {"auth": "Bearer tok", "got": '{"n": 1}'}
        rootfs = tmp_path / "rootfs.tar"
        rootfs.write_bytes(b"x" * 100_000)
        assert api.upload("/images/i/file", rootfs)["got"] == "x" * 100_000
        assert api.get("/chunked") == {"a": [1, 2]}
        assert api.delete("/things/a b") is None
        assert api.find("/missing") is None and api.exists("/things")
        assert api.long_poll("/i/watch", {"since": "v 1", "wait": "0.5"}, 0.5)[0] == 200
        assert api.long_poll("/i/watch", {"since": "gone"}, 0.5) == (410, {"detail": "deleted"})
        with pytest.raises(CliError, match=r"^no such thing \(HTTP 404\)$"):
            api.get("/missing")
        with pytest.raises(CliError, match=r"^HTTP 502: <html>bad gateway"):
            api.get("/broken")
    assert ("DELETE", "/v1/things/a%20b", b"") in _Handler.seen
    assert ("GET", "/v1/i/watch?since=v+1&wait=0.5", b"") in _Handler.seen


@given(st.text(), st.sampled_from(["/", "", "/?&=%:@+,;!$'()*~"]))
def test_the_clients_quoting_is_urllibs(text, safe):
    from urllib.parse import quote as urllib_quote
    from urllib.parse import urlencode

    assert quote(text, safe) == urllib_quote(text, safe=safe)
    assert encode_query({text: text, "n": 25.0}) == urlencode({text: text, "n": 25.0})


@pytest.mark.parametrize(
    ("url", "parts"),
    [
        ("http://127.0.0.1:8787", (False, "127.0.0.1:8787", "127.0.0.1", 8787, "")),
        ("HTTPS://Cloud.Example/base", (True, "Cloud.Example", "cloud.example", 443, "/base")),
        ("http://[fd00::1]:8787/", (False, "[fd00::1]:8787", "fd00::1", 8787, "")),
        ("http://[fd00::1]", (False, "[fd00::1]", "fd00::1", 80, "")),
    ],
)
def test_a_dockyard_url_names_scheme_host_port_and_path(url, parts):
    assert _split_url(url) == parts


@pytest.mark.parametrize(
    "url",
    [
        "127.0.0.1:8787",
        "ftp://h:21",
        "http://:80",
        "http://h:0",
        "http://h:65536",
        "http://h:http",
        "http://h:²",  # a digit to str.isdigit, not to int()
        "http://user@h:1",
        "http://h:1/?q",
        "http://[fd00::1",
        "http://[fd00::1]x",
        "http://[h]:1",
    ],
)
def test_a_url_that_is_no_dockyard_url_is_refused(url):
    assert _split_url(url) is None
    with pytest.raises(CliError, match="DOCKYARD_URL must look like http://HOST:PORT"):
        Api(url, "t")


def test_an_unreachable_server_or_a_bad_url_is_a_one_line_error():
    with pytest.raises(CliError, match="cannot reach the server at http://127.0.0.1:9"):
        Api("http://127.0.0.1:9", "t").get("/instances")
    with pytest.raises(CliError, match="DOCKYARD_URL must look like http://HOST:PORT"):
        Api("127.0.0.1:8787", "t")
    with pytest.raises(CliError, match="DOCKYARD_URL must look like http://HOST:PORT"):
        Api("http://localhost:http", "t")
    with pytest.raises(CliError, match="cannot reach the server at http://no-such-host.invalid"):
        Api("http://no-such-host.invalid:8787", "t").get("/instances")


@pytest.mark.parametrize("argv", [["--help"], ["server", "list", "-f", "json"]])
def test_a_reader_that_leaves_early_gets_no_traceback(argv):
    """`dockyard server list | head -1`: the rest of the output goes nowhere, quietly."""
    code = "import sys\nfrom dockyard.cli.main import main\nsys.exit(main())"
    with http_server() as url:
        env = {"DOCKYARD_URL": url, "DOCKYARD_TOKEN": "t", "PATH": "/usr/bin:/bin"}
        env["PYTHONDONTWRITEBYTECODE"] = "1"
        proc = subprocess.Popen(
            [sys.executable, "-c", code, *argv],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        proc.stdout.close()  # before the command writes a byte
        err = proc.stderr.read().decode()
        proc.wait(30)
    assert proc.returncode == 0, err
    assert "Traceback" not in err and "BrokenPipe" not in err


def test_the_clis_quota_flags_are_the_models_quota_resources():
    """catalog.py keeps its own copy (the CLI must not import the pydantic models)."""
    from dockyard.cli.catalog import QUOTA_FLAGS
    from dockyard.model.identity import QUOTA_RESOURCES

    assert QUOTA_FLAGS == QUOTA_RESOURCES
