"""The HTTP edge of a real ``rlserve serve`` (HAProxy ingress, token): no input yields a 5xx.

The reliability suite's bad-input matrix (each bad request followed by a good one) and
schemathesis, which generates requests from the service's own OpenAPI document and checks every
answer against it (status listed, content type, body schema, headers, auth enforced).
"""

from __future__ import annotations

import contextlib
import io
import json
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from rlserve.jobs.service import free_port
from serving import wire
from tests.helpers.serve_process import serving

pytestmark = [pytest.mark.integration, pytest.mark.reliability]

TOKEN = "edge-token"
AUTH = {wire.AUTHORIZATION: wire.bearer(TOKEN)}
JSON = {**AUTH, "content-type": wire.JSON}
NPY = {**AUTH, "content-type": wire.NPY}
OBS = [0.01, -0.02, 0.03, 0.04]
ACTION = wire.action_path("cartpole")
ACTIONS = wire.actions_path("cartpole")


@pytest.fixture(scope="module")
def url(cartpole_artifact: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``rlserve serve ARTIFACT --name cartpole --token ...`` on its defaults otherwise."""
    port = free_port()
    args = [str(cartpole_artifact), "--name", "cartpole", "--port", str(port), "--token", TOKEN]
    with serving(args, tmp_path_factory.mktemp("edge")):
        yield f"http://127.0.0.1:{port}"


def _npy(array: np.ndarray, allow_pickle: bool = False) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=allow_pickle)
    return buffer.getvalue()


def _npy_header(shape: tuple[int, ...]) -> bytes:
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        buffer, {"descr": "<f4", "fortran_order": False, "shape": shape}
    )
    return buffer.getvalue()


def _obs(value: Any) -> bytes:
    return json.dumps({"observation": value}).encode()


DEEP = b"[" * 5000 + b"]" * 5000
LONG_INT = b"9" * 5000
# (kind, method, path, body, headers, status, part of the detail)
MATRIX: list[tuple[str, str, str, bytes, dict[str, str], int, str]] = [
    ("not JSON", "POST", ACTION, b"{not json", JSON, 400, "malformed JSON"),
    ("empty body", "POST", ACTION, b"", JSON, 400, "malformed JSON"),
    ("bad UTF-8", "POST", ACTION, b'{"observation": "\xff\xfe"}', JSON, 400, "malformed JSON"),
    ("UTF-16", "POST", ACTION, _obs(OBS).decode().encode("utf-16"), JSON, 400, "malformed"),
    ("nested 5000 deep", "POST", ACTION, b'{"observation": ' + DEEP + b"}", JSON, 400, "nested"),
    ("nested in unknown key", "POST", ACTIONS, b'{"x": ' + DEEP + b"}", JSON, 400, "nested"),
    (
        "5000-digit int",
        "POST",
        ACTION,
        b'{"observation": [' + LONG_INT + b"]}",
        JSON,
        422,
        "digits",
    ),
    (
        "5000-digit int in a batch",
        "POST",
        ACTIONS,
        b'{"observations": [[0, 0, 0, ' + LONG_INT + b"]]}",
        JSON,
        422,
        "digits",
    ),
    (
        "5000-digit seed",
        "POST",
        ACTION,
        b'{"observation": [0, 0, 0, 0], "seed": ' + LONG_INT + b"}",
        JSON,
        422,
        "digits",
    ),
    ("wrong shape", "POST", ACTION, _obs([1, 2]), JSON, 422, "expected shape (4,)"),
    ("NaN", "POST", ACTION, b'{"observation": [NaN, 0, 0, 0]}', JSON, 422, "NaN"),
    ("Infinity", "POST", ACTION, b'{"observation": [0, -Infinity, 0, 0]}', JSON, 422, "NaN"),
    ("1e400", "POST", ACTION, b'{"observation": [0, 1e400, 0, 0]}', JSON, 422, "NaN"),
    ("beyond float32", "POST", ACTION, _obs([0, 1e39, 0, 0]), JSON, 422, "beyond the range"),
    ("outside the space", "POST", ACTION, _obs([9.0, 0, 0, 0]), JSON, 422, "outside"),
    ("boolean", "POST", ACTION, _obs([True, 0, 0, 0]), JSON, 422, "got a boolean"),
    ("string", "POST", ACTION, _obs(["0", 0, 0, 0]), JSON, 422, "expected numbers"),
    ("null", "POST", ACTION, _obs(None), JSON, 422, "observation"),
    ("object", "POST", ACTION, _obs({"a": 1}), JSON, 422, "observation"),
    ("ragged batch", "POST", ACTIONS, b'{"observations": [[0,0,0,0],[0]]}', JSON, 422, "shape"),
    ("missing field", "POST", ACTION, b"{}", JSON, 422, "observation: Field required"),
    ("extra field", "POST", ACTION, b'{"observation": [0,0,0,0], "x": 1}', JSON, 422, "x:"),
    ("top-level array", "POST", ACTION, b"[1, 2]", JSON, 422, "body"),
    ("negative seed", "POST", ACTION, b'{"observation": [0,0,0,0], "seed": -1}', JSON, 422, "seed"),
    ("float seed", "POST", ACTION, b'{"observation": [0,0,0,0], "seed": 1.5}', JSON, 422, "seed"),
    (
        "seed 2**64",
        "POST",
        ACTION,
        b'{"observation": [0,0,0,0], "seed": 18446744073709551616}',
        JSON,
        422,
        "seed",
    ),
    (
        "string explore",
        "POST",
        ACTION,
        b'{"observation": [0,0,0,0], "explore": "yes"}',
        JSON,
        422,
        "explore",
    ),
    ("empty batch", "POST", ACTIONS, b'{"observations": []}', JSON, 422, "at least one"),
    (
        "rows over max_rows",
        "POST",
        ACTIONS,
        json.dumps({"observations": [OBS] * 4097}).encode(),
        JSON,
        413,
        "max_rows=4096",
    ),
    (
        "text/plain",
        "POST",
        ACTION,
        b"hello",
        {**AUTH, "content-type": "text/plain"},
        415,
        "application/json",
    ),
    ("no content type", "POST", ACTION, _obs(OBS), AUTH, 415, "application/json"),
    (
        "npy to compute_action",
        "POST",
        ACTION,
        _npy(np.zeros((1, 4), np.float32)),
        NPY,
        415,
        "application/json",
    ),
    ("npy claims 2**31 rows", "POST", ACTIONS, _npy_header((2**31, 4)), NPY, 413, "rows"),
    ("npy claims 1 TiB", "POST", ACTIONS, _npy_header((1, 2**40)), NPY, 400, "declares"),
    ("npy negative side", "POST", ACTIONS, _npy_header((-2, -2)) + bytes(16), NPY, 400, "negative"),
    ("npy empty, huge sides", "POST", ACTIONS, _npy_header((0, 2**40, 2**40)), NPY, 400, "large"),
    ("npy truncated", "POST", ACTIONS, _npy(np.zeros((3, 4), np.float32))[:-5], NPY, 400, "npy"),
    ("npy pickle", "POST", ACTIONS, _npy(np.array([{}], dtype=object), True), NPY, 422, "dtype"),
    ("npy wrong shape", "POST", ACTIONS, _npy(np.zeros((2, 5), np.float32)), NPY, 422, "shape"),
    ("npy booleans", "POST", ACTIONS, _npy(np.ones((2, 4), bool)), NPY, 422, "booleans"),
    ("npy NaN", "POST", ACTIONS, _npy(np.full((1, 4), np.nan, np.float32)), NPY, 422, "NaN"),
    (
        "npy explore=maybe",
        "POST",
        ACTIONS + "?explore=maybe",
        _npy(np.zeros((1, 4), np.float32)),
        NPY,
        422,
        "explore",
    ),
    ("unknown policy", "POST", wire.action_path("nope"), _obs(OBS), JSON, 404, "unknown policy"),
    ("no token", "POST", ACTION, _obs(OBS), {"content-type": wire.JSON}, 401, "bearer token"),
    (
        "wrong token",
        "POST",
        ACTION,
        _obs(OBS),
        {"content-type": wire.JSON, wire.AUTHORIZATION: wire.bearer("guess")},
        401,
        "bearer token",
    ),
    (
        "not bearer",
        "GET",
        wire.POLICIES,
        b"",
        {wire.AUTHORIZATION: f"Basic {TOKEN}"},
        401,
        "bearer token",
    ),
    ("GET a compute route", "GET", ACTION, b"", AUTH, 405, "Method Not Allowed"),
]


def _good(url: str) -> None:
    answer = httpx.post(url + ACTION, content=_obs(OBS), headers=JSON)
    assert answer.status_code == 200, answer.text
    assert answer.json()["action"] in (0, 1)


@pytest.mark.parametrize(
    ("kind", "method", "path", "body", "headers", "status", "detail"),
    MATRIX,
    ids=[row[0] for row in MATRIX],
)
def test_bad_input_is_a_clear_4xx_and_the_next_request_succeeds(
    url: str,
    kind: str,
    method: str,
    path: str,
    body: bytes,
    headers: dict[str, str],
    status: int,
    detail: str,
) -> None:
    answer = httpx.request(method, url + path, content=body or None, headers=headers)
    assert answer.status_code == status, (kind, answer.status_code, answer.text[:300])
    assert answer.headers["content-type"] == wire.JSON
    assert detail in answer.json()["detail"], (kind, answer.json())
    _good(url)


def _raw(url: str, request: bytes, send_more: bytes = b"") -> bytes:
    """Send raw bytes on one connection; the first answer's status line and headers."""
    port = int(url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(request)
        if send_more:
            # The server may answer and close before all of it is sent: what we want.
            with contextlib.suppress(OSError):
                sock.sendall(send_more)
        answer = b""
        while b"\r\n\r\n" not in answer:
            chunk = sock.recv(65536)
            if not chunk:
                break
            answer += chunk
        return answer


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_a_50_mb_body_is_refused_before_it_is_read(url: str, chunked: bool) -> None:
    head = (
        f"POST {ACTIONS} HTTP/1.1\r\nHost: x\r\nContent-Type: {wire.JSON}\r\n"
        f"Authorization: {wire.bearer(TOKEN)}\r\n"
    )
    piece = b"0," * 32768
    if chunked:
        head += "Transfer-Encoding: chunked\r\n\r\n"
        chunk = f"{len(piece):x}\r\n".encode() + piece + b"\r\n"
        more = chunk * (50 * 1024 * 1024 // len(piece))
    else:
        head += f"Content-Length: {50 * 1024 * 1024}\r\n\r\n"
        more = piece * 16
    answer = _raw(url, head.encode(), more)
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    _good(url)


def test_schemathesis_finds_no_5xx_and_no_answer_outside_the_openapi_document(
    url: str, tmp_path: Path
) -> None:
    # Every generated request goes to the served policy (a random name would only get 404s).
    config = tmp_path / "schemathesis.toml"
    config.write_text('[parameters]\n"path.name" = "cartpole"\n')
    # positive_data_acceptance is left out: the document cannot know each policy's observation
    # space (`observation` is any JSON), so schema-valid bodies are mostly, rightly, 422.
    run = subprocess.run(
        [
            str(Path(sys.executable).parent / "st"),
            *("--no-color", "--config-file", str(config), "run", f"{url}/openapi.json"),
            *("--header", f"Authorization: {wire.bearer(TOKEN)}"),
            *("--checks", "all", "--exclude-checks", "positive_data_acceptance"),
            *("--max-examples", "40", "--workers", "1", "--request-timeout", "10"),
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=240,
        check=False,
    )
    summary = run.stdout[run.stdout.find("SUMMARY") :]
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-2000:]
    assert "6 selected" in run.stdout, run.stdout[:2000]
    print(summary)  # the run's figures: test cases generated and passed
    _good(url)
