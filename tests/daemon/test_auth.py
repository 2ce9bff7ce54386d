"""API keys and the request size limit, from outside: a real daemon and raw HTTP."""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from .helpers import ROOT, Daemon, base_env, cli, start_daemon

LIMIT = 4096
METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS")


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    """This module's daemon takes bodies of up to ``LIMIT`` bytes."""
    running = start_daemon(
        tmp_path_factory.mktemp("auth"), env={"TRIGGERFISH_MAX_BODY_BYTES": str(LIMIT)}
    )
    try:
        yield running
    finally:
        running.stop()


def _concrete(path: str) -> str:
    return re.sub(r"\{[^}]+\}", "some-id", path)


def _openapi(daemon: Daemon) -> dict[str, dict[str, object]]:
    with daemon.http() as http:
        answer = http.get("/openapi.json")
    assert answer.status_code == 200
    paths: dict[str, dict[str, object]] = answer.json()["paths"]
    return paths


def _serve(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "triggerfish", "serve", "--port", "0", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        stdin=subprocess.DEVNULL,
    )


def test_no_key_is_401_with_one_line_and_nothing_else(daemon: Daemon) -> None:
    answer = httpx.get(f"{daemon.url}/functions")
    assert answer.status_code == 401
    assert answer.json() == {"detail": "missing API key"}
    assert answer.headers["content-type"] == "application/json"
    assert answer.headers["www-authenticate"] == "Bearer"


@pytest.mark.parametrize(
    "headers",
    [
        {"X-API-Key": "tf_not-a-key"},
        {"Authorization": "Bearer tf_not-a-key"},
        {"Authorization": "Basic dXNlcjpwYXNz"},
        {"X-API-Key": ""},
        {"Authorization": "Bearer"},
    ],
    ids=["x-api-key", "bearer", "basic", "empty-header", "empty-bearer"],
)
def test_a_wrong_key_is_401(daemon: Daemon, headers: dict[str, str]) -> None:
    answer = httpx.get(f"{daemon.url}/functions", headers=headers)
    assert answer.status_code == 401
    assert set(answer.json()) == {"detail"}
    assert "tf_not-a-key" not in answer.text


def test_a_near_miss_of_the_key_is_401(daemon: Daemon) -> None:
    for wrong in (daemon.key[:-1], daemon.key + "x", daemon.key.upper(), "X" + daemon.key[1:]):
        answer = httpx.get(f"{daemon.url}/functions", headers={"X-API-Key": wrong})
        assert answer.status_code == 401, wrong
        assert answer.json() == {"detail": "invalid API key"}


@pytest.mark.parametrize(
    "header", ["X-API-Key", "Authorization"], ids=["x-api-key", "authorization-bearer"]
)
def test_the_key_works_in_either_header(daemon: Daemon, header: str) -> None:
    value = daemon.key if header == "X-API-Key" else f"Bearer {daemon.key}"
    answer = httpx.get(f"{daemon.url}/functions", headers={header: value})
    assert answer.status_code == 200
    assert "add" in [f["name"] for f in answer.json()]
    # the scheme is case-insensitive, as HTTP says
    lower = httpx.get(f"{daemon.url}/functions", headers={"Authorization": f"bearer {daemon.key}"})
    assert lower.status_code == 200


def test_health_needs_no_key(daemon: Daemon) -> None:
    answer = httpx.get(f"{daemon.url}/health")
    assert answer.status_code == 200 and answer.json() == {"status": "ok"}


def test_the_openapi_document_and_docs_need_a_key(daemon: Daemon) -> None:
    for path in ("/openapi.json", "/docs", "/redoc", "/docs/oauth2-redirect"):
        answer = httpx.get(f"{daemon.url}{path}")
        assert answer.status_code == 401, path
        assert set(answer.json()) == {"detail"}
    assert _openapi(daemon)  # and with one it is served


def test_every_route_and_method_needs_a_key(daemon: Daemon) -> None:
    paths = _openapi(daemon)
    assert len(paths) >= 20, sorted(paths)
    checked = 0
    with httpx.Client(base_url=daemon.url, timeout=10) as http:
        for path in [*paths, "/no/such/route", "/health/", "/executions/"]:
            for method in METHODS:
                answer = http.request(
                    method, _concrete(path), json={"args": [1, 2]}, params={"timeout": 0}
                )
                checked += 1
                if path == "/health":
                    expected = 200 if method == "GET" else 405
                    assert answer.status_code == expected, (method, path)
                    continue
                assert answer.status_code == 401, (method, path, answer.status_code)
                if method != "HEAD":
                    assert set(answer.json()) == {"detail"}, (method, path)
    assert checked == (len(paths) + 3) * len(METHODS)


def test_every_route_with_the_key_answers_without_echoing_it(daemon: Daemon) -> None:
    paths = _openapi(daemon)
    with daemon.http() as http:
        for path, operations in paths.items():
            for method in operations:
                answer = http.request(
                    method.upper(), _concrete(path), json={}, params={"timeout": 0}
                )
                assert answer.status_code < 500, (method, path, answer.text)
                assert answer.status_code != 401, (method, path)
                assert daemon.key not in answer.text, (method, path)
                assert daemon.key not in json.dumps(dict(answer.headers)), (method, path)


def test_the_key_never_reaches_the_daemons_log(daemon: Daemon) -> None:
    with daemon.http() as http:
        http.get("/functions")
        http.post("/functions/add/call", json={"args": [1, 2]})
        http.get(f"/functions/{daemon.key}")  # even a key where a name goes is not logged
    httpx.get(f"{daemon.url}/functions", headers={"X-API-Key": daemon.key + "x"})
    stderr = daemon.stderr
    assert "api_key_created" in stderr  # the log says a key was made, and where it went
    assert daemon.key not in stderr
    assert daemon.key[3:] not in stderr


def test_a_body_over_the_limit_with_content_length_is_413(daemon: Daemon) -> None:
    with daemon.http() as http:
        small = http.post("/functions/add/executions", json={"args": [1, "x" * 1000]})
        assert small.status_code == 201
        big = {"args": [1, "x" * LIMIT]}
        for path in ("/functions/add/executions", "/functions/add/call", "/events"):
            answer = http.post(path, json=big)
            assert answer.status_code == 413, path
            assert answer.json() == {
                "detail": f"request body too large: the limit is {LIMIT} bytes"
            }
        pickled = http.post(
            "/functions/add/call",
            content=b"\x80" * (LIMIT + 1),
            headers={"Content-Type": "application/x-python-pickle"},
        )
        assert pickled.status_code == 413


def test_a_chunked_body_over_the_limit_is_413(daemon: Daemon) -> None:
    def chunks(total: int, content: bytes = b" ") -> Iterator[bytes]:
        yield b'{"args": [1, "'
        for _ in range(total // 512):
            yield b"y" * 512
        yield b'"]}'

    with daemon.http() as http:
        for path, content_type in (
            ("/functions/add/executions", "application/json"),
            ("/functions/add/executions/batch", "application/json"),
            ("/events", "application/json"),
            ("/triggers", "application/json"),
            ("/functions/add/call", "application/json"),
            ("/functions/add/call", "application/x-python-pickle"),
            ("/applications/echo", "application/json"),
        ):
            answer = http.post(
                path, content=chunks(LIMIT * 2), headers={"Content-Type": content_type}
            )
            assert answer.request.headers.get("transfer-encoding") == "chunked"
            assert answer.status_code == 413, (path, content_type, answer.text)
            assert set(answer.json()) == {"detail"}
        under = http.post(
            "/functions/add/executions",
            content=chunks(1024),
            headers={"Content-Type": "application/json"},
        )
        assert under.status_code == 201, under.text


def test_a_malformed_content_length_is_400_or_refused(daemon: Daemon) -> None:
    import socket
    from urllib.parse import urlsplit

    parts = urlsplit(daemon.url)
    request = (
        f"POST /events HTTP/1.1\r\nHost: {parts.netloc}\r\nX-API-Key: {daemon.key}\r\n"
        "Content-Type: application/json\r\nContent-Length: lots\r\n\r\n{}"
    ).encode()
    with socket.create_connection((parts.hostname, parts.port), timeout=10) as sock:
        sock.sendall(request)
        reply = sock.recv(4096).decode("latin-1")
    assert reply.startswith("HTTP/1.1 400"), reply


def test_a_non_loopback_bind_without_keys_is_refused(tmp_path: Path) -> None:
    env = base_env(tmp_path / "credentials.json")
    result = _serve("--host", "0.0.0.0", "--data-dir", str(tmp_path / "data"), env=env, cwd=ROOT)
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "not a loopback address" in lines[0] and "api_keys" in lines[0]
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "credentials.json").exists()  # no key was made for it
    assert not (tmp_path / "data" / "api-keys").exists()


@pytest.mark.parametrize(
    "keys",
    [
        "md5:abc",
        "sha256:" + "ab" * 31,
        "sha256:" + "zz" * 32,
        "tf_this-looks-like-a-key-not-a-hash",
    ],
    ids=["other-scheme", "short", "not-hex", "a-key-itself"],
)
def test_a_malformed_key_hash_is_refused_clearly(tmp_path: Path, keys: str) -> None:
    env = base_env(tmp_path / "credentials.json", TRIGGERFISH_API_KEYS=keys)
    result = _serve("--data-dir", str(tmp_path / "data"), env=env, cwd=ROOT)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "api_keys" in lines[0] and "Traceback" not in result.stderr
    if keys.startswith("tf_"):  # a key pasted where its hash goes is not echoed whole
        assert keys not in result.stderr


def test_a_malformed_key_hash_in_the_config_file_is_refused(tmp_path: Path) -> None:
    config = tmp_path / "triggerfish.toml"
    config.write_text('api_keys = ["sha256:nothex"]\n')
    env = base_env(tmp_path / "credentials.json")
    result = _serve("--config", str(config), "--data-dir", str(tmp_path), env=env, cwd=ROOT)
    assert result.returncode == 1
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "api_keys" in result.stderr


def test_the_local_key_is_saved_for_its_owner_only(daemon: Daemon) -> None:
    assert daemon.credentials.stat().st_mode & 0o077 == 0
    assert json.loads(daemon.credentials.read_text()) == {daemon.url: daemon.key}
    stored = (daemon.data_dir / "api-keys").read_text()
    assert daemon.key not in stored  # the daemon keeps only the hash
    assert hashlib.sha256(daemon.key.encode()).hexdigest() in stored


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (("--app", "no_such_module:setup"), "cannot import 'no_such_module'"),
        (("--app", "tests.daemon.daemon_app:nothing"), "has no function 'nothing'"),
        (("--app", "no-colon"), "must be 'module:function'"),
        (("--drain-timeout", "-1"), "drain_timeout"),
    ],
)
def test_a_bad_serve_option_is_one_clear_line(
    tmp_path: Path, args: tuple[str, ...], says: str
) -> None:
    env = base_env(tmp_path / "credentials.json")
    result = _serve("--data-dir", str(tmp_path / "data"), *args, env=env, cwd=ROOT)
    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and says in errors[0], result.stderr
    assert "Traceback" not in result.stderr


def test_a_port_in_use_is_one_clear_line(tmp_path: Path, daemon: Daemon) -> None:
    port = daemon.url.rsplit(":", 1)[1]
    env = base_env(tmp_path / "credentials.json")
    result = subprocess.run(
        [sys.executable, "-m", "triggerfish", "serve", "--port", port, "--data-dir", str(tmp_path)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 1
    assert result.stderr.startswith(f"error: cannot listen on 127.0.0.1:{port}")
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr


def test_configured_keys_replace_the_local_key(tmp_path: Path) -> None:
    made = cli(None, "keys", "create", credentials=tmp_path / "unused.json")
    assert made.returncode == 0, made.stderr
    key = re.search(r"key:\s+(\S+)", made.stdout)
    digest = re.search(r"hash:\s+(\S+)", made.stdout)
    assert key and digest and digest.group(1).startswith("sha256:")
    daemon = start_daemon(
        tmp_path, key=key.group(1), env={"TRIGGERFISH_API_KEYS": f" {digest.group(1)} ,"}
    )
    try:
        with daemon.http() as http:
            assert http.get("/functions").status_code == 200
        assert httpx.get(f"{daemon.url}/functions").status_code == 401
        # no local key is made when keys are configured
        assert not (daemon.data_dir / "api-keys").exists()
        assert not daemon.credentials.exists()
        assert key.group(1) not in daemon.stderr
    finally:
        assert daemon.stop() == 0
