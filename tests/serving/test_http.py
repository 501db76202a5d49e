"""The HTTP API through httpx.ASGITransport: answers, parity, and the whole bad-input contract."""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

import serving
from serving import PolicyRegistry, PolicyRuntime, ServingSettings, create_app, wire
from tests.helpers.policies import POLICY_NAMES, TinyPolicies
from training import Algorithm


@pytest.fixture(scope="module")
def artifacts(tiny_policies: TinyPolicies) -> dict[str, tuple[Path, Path]]:
    """Each shared policy's last checkpoint and its ONNX-only artifact."""
    return {
        name: (tiny_policies.checkpoint(name), tiny_policies.artifact(name, ["onnx"]))
        for name in POLICY_NAMES
    }


@pytest.fixture(scope="module")
def registry(artifacts: dict[str, tuple[Path, Path]]) -> PolicyRegistry:
    return PolicyRegistry.from_paths({name: art for name, (_, art) in artifacts.items()})


class Client:
    """A tiny synchronous wrapper over an async httpx client on the ASGI app."""

    def __init__(self, app: Any) -> None:
        self.loop = asyncio.new_event_loop()
        self.client = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://rlserve.test"
        )

    def request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        return self.loop.run_until_complete(self.client.request(method, url, **kwargs))

    def close(self) -> None:
        self.loop.run_until_complete(self.client.aclose())
        self.loop.close()


@pytest.fixture()
def client(registry: PolicyRegistry) -> Iterator[Client]:
    c = Client(create_app(registry, ServingSettings(max_rows=64, max_body_bytes=64 * 1024)))
    yield c
    c.close()


CARTPOLE_OBS = [0.01, -0.02, 0.03, 0.04]
ACTION_URL = wire.action_path("cartpole")
ACTIONS_URL = wire.actions_path("cartpole")


def test_compute_action_matches_the_training_policy(
    client: Client, artifacts: dict[str, tuple[Path, Path]]
) -> None:
    with Algorithm.from_checkpoint(artifacts["structured"][0]) as algo:
        space = algo.observation_space
        space.seed(5)
        for _ in range(20):
            obs = space.sample()
            body = {"observation": _jsonable(space, obs)}
            answer = client.request("POST", wire.action_path("structured"), json=body)
            assert answer.status_code == 200, answer.text
            assert answer.json()["action"] == algo.compute_single_action(obs, explore=False)


def _jsonable(space: Any, obs: Any) -> Any:
    import gymnasium as gym

    if isinstance(space, gym.spaces.Dict):
        return {k: _jsonable(space[k], obs[k]) for k in space.spaces}
    if isinstance(space, gym.spaces.Tuple):
        return [_jsonable(s, o) for s, o in zip(space.spaces, obs, strict=True)]
    return np.asarray(obs).tolist()


def test_answers_carry_policy_and_version(client: Client, registry: PolicyRegistry) -> None:
    answer = client.request(
        "POST", ACTION_URL, json={"observation": CARTPOLE_OBS, "return_dist_inputs": True}
    )
    assert answer.status_code == 200
    data = answer.json()
    assert data["policy"] == "cartpole"
    runtime = registry.get("cartpole")
    assert runtime is not None
    assert data["version"] == runtime.version
    assert data["action"] in (0, 1)
    assert len(data["action_dist_inputs"]) == 2
    assert data["action"] == int(np.argmax(data["action_dist_inputs"]))


def test_batch_equals_single_requests(client: Client) -> None:
    rng = np.random.default_rng(0)
    batch = (rng.normal(size=(40, 4)) * 0.1).astype(np.float32).tolist()
    answer = client.request("POST", ACTIONS_URL, json={"observations": batch})
    assert answer.status_code == 200
    singles = [
        client.request("POST", ACTION_URL, json={"observation": o}).json()["action"] for o in batch
    ]
    assert answer.json()["actions"] == singles


def test_npy_batches_in_and_out(client: Client) -> None:
    observations = np.zeros((16, 4), np.float32)
    buffer = io.BytesIO()
    np.save(buffer, observations, allow_pickle=False)
    answer = client.request(
        "POST",
        ACTIONS_URL,
        content=buffer.getvalue(),
        headers={"content-type": wire.NPY, "accept": wire.NPY},
    )
    assert answer.status_code == 200, answer.text
    actions = np.load(io.BytesIO(answer.content), allow_pickle=False)
    assert actions.shape == (16,)
    assert answer.headers[wire.VERSION_HEADER]
    as_json = client.request("POST", ACTIONS_URL, json={"observations": observations.tolist()})
    assert as_json.json()["actions"] == actions.tolist()


def test_exploration_is_seeded_and_valid(client: Client) -> None:
    for name, obs, check in (
        ("cartpole", CARTPOLE_OBS, lambda a: a in (0, 1)),
        ("dqn", CARTPOLE_OBS, lambda a: a in (0, 1)),
        ("pendulum", [1.0, 0.0, 0.5], lambda a: len(a) == 1 and -2.0 <= a[0] <= 2.0),
    ):
        url = wire.actions_path(name)
        body = {"observations": [obs] * 32, "explore": True, "seed": 7}
        first = client.request("POST", url, json=body).json()["actions"]
        again = client.request("POST", url, json=body).json()["actions"]
        assert first == again
        assert all(check(a) for a in first)
    samples = client.request(
        "POST",
        ACTIONS_URL,
        json={"observations": [CARTPOLE_OBS] * 64, "explore": True, "seed": 1},
    ).json()["actions"]
    assert set(samples) == {0, 1}  # an untrained policy samples both actions


def test_metadata_endpoints(client: Client) -> None:
    assert client.request("GET", wire.HEALTHZ).json() == {"status": "ok"}
    ready = client.request("GET", wire.READYZ)
    assert ready.status_code == 200
    assert set(ready.json()["policies"]) == set(POLICY_NAMES)
    listing = client.request("GET", wire.POLICIES).json()["policies"]
    assert {p["name"] for p in listing} == set(POLICY_NAMES)
    one = client.request("GET", wire.policy_path("pendulum")).json()
    assert one["action_space"]["type"] == "Box"
    assert one["max_rows"] == 64
    assert one["formats"] == ["onnx"]
    docs = client.request("GET", "/openapi.json").json()
    assert wire.ACTION_ROUTE in docs["paths"]


def test_readyz_is_503_without_policies() -> None:
    c = Client(create_app(PolicyRegistry()))
    try:
        assert c.request("GET", wire.READYZ).status_code == 503
    finally:
        c.close()


# ----------------------------------------------------------------- the bad-input contract
def _npy(array: np.ndarray, allow_pickle: bool = False) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=allow_pickle)
    return buffer.getvalue()


JSON = {"content-type": wire.JSON}


def _npy_header(shape: tuple[int, ...]) -> bytes:
    """A ``.npy`` header declaring ``shape`` of float32, and no data at all."""
    buffer = io.BytesIO()
    header = {"descr": "<f4", "fortran_order": False, "shape": shape}
    np.lib.format.write_array_header_1_0(buffer, header)
    return buffer.getvalue()


BAD_INPUTS: list[tuple[str, str, dict[str, Any], int, str]] = [
    (
        "malformed json",
        ACTION_URL,
        {"content": b'{"observation": [1,', "headers": JSON},
        400,
        "malformed JSON",
    ),
    ("not utf-8", ACTION_URL, {"content": b"\xff\xfe", "headers": JSON}, 400, "malformed JSON"),
    ("missing field", ACTION_URL, {"json": {}}, 422, "observation: Field required"),
    (
        "unknown field",
        ACTION_URL,
        {"json": {"observation": CARTPOLE_OBS, "x": 1}},
        422,
        "x: Extra inputs",
    ),
    (
        "explore not bool",
        ACTION_URL,
        {"json": {"observation": CARTPOLE_OBS, "explore": "yes"}},
        422,
        "explore",
    ),
    ("negative seed", ACTION_URL, {"json": {"observation": CARTPOLE_OBS, "seed": -1}}, 422, "seed"),
    (
        "wrong shape",
        ACTION_URL,
        {"json": {"observation": [1.0, 2.0]}},
        422,
        "expected shape (4,), got (2,)",
    ),
    ("ragged", ACTIONS_URL, {"json": {"observations": [[0, 0, 0, 0], [0, 0]]}}, 422, "shape"),
    (
        "strings",
        ACTION_URL,
        {"json": {"observation": ["a", "b", "c", "d"]}},
        422,
        "expected numbers",
    ),
    (
        "NaN",
        ACTION_URL,
        {"content": b'{"observation": [NaN, 0, 0, 0]}', "headers": JSON},
        422,
        "NaN or infinity",
    ),
    (
        "Infinity",
        ACTION_URL,
        {"content": b'{"observation": [0, Infinity, 0, 0]}', "headers": JSON},
        422,
        "NaN or infinity",
    ),
    (
        "beyond float32",  # would become inf, which an unbounded Box would otherwise accept
        ACTION_URL,
        {"json": {"observation": [0, 1e39, 0, 0]}},
        422,
        "value beyond the range of float32",
    ),
    (
        "out of bounds",
        ACTION_URL,
        {"json": {"observation": [9.0, 0, 0, 0]}},
        422,
        "outside the observation space",
    ),
    (
        "dict missing key",
        wire.action_path("structured"),
        {"json": {"observation": {"position": [0, 0, 0]}}},
        422,
        "missing key",
    ),
    (
        "dict as list",
        wire.action_path("structured"),
        {"json": {"observation": [1, 2]}},
        422,
        "expected an object",
    ),
    ("empty batch", ACTIONS_URL, {"json": {"observations": []}}, 422, "at least one"),
    (
        "observations not a list",
        ACTIONS_URL,
        {"json": {"observations": {"a": 1}}},
        422,
        "observations",
    ),
    (
        "unknown policy",
        wire.action_path("nope"),
        {"json": {"observation": CARTPOLE_OBS}},
        404,
        "unknown policy 'nope'",
    ),
    (
        "too many rows",
        ACTIONS_URL,
        {"json": {"observations": [CARTPOLE_OBS] * 65}},
        413,
        "max_rows=64",
    ),
    (
        "body too large",
        ACTIONS_URL,
        {"content": b"[" + b"0," * 40_000 + b"0]", "headers": JSON},
        413,
        "exceeds the limit",
    ),
    (
        "wrong content type",
        ACTION_URL,
        {"content": b"hello", "headers": {"content-type": "text/plain"}},
        415,
        "application/json",
    ),
    (
        "npy with pickle",
        ACTIONS_URL,
        {
            "content": _npy(np.array([{"a": 1}], dtype=object), True),
            "headers": {"content-type": wire.NPY},
        },
        422,
        "expected numbers, got dtype |O",
    ),
    (
        "npy header claims 2**31 rows",  # numpy.load would allocate 32 GiB before reading
        ACTIONS_URL,
        {"content": _npy_header((2**31, 4)), "headers": {"content-type": wire.NPY}},
        413,
        "expected 1..64 rows",
    ),
    (
        "npy header claims more data than sent",
        ACTIONS_URL,
        {"content": _npy_header((8, 2**40)), "headers": {"content-type": wire.NPY}},
        400,
        "the header declares shape (8, 1099511627776)",
    ),
    (
        "npy truncated",
        ACTIONS_URL,
        {
            "content": _npy(np.zeros((3, 4), np.float32))[:-5],
            "headers": {"content-type": wire.NPY},
        },
        400,
        "malformed .npy body",
    ),
    (
        "npy not npy",
        ACTIONS_URL,
        {"content": b"\x93NUMPX garbage", "headers": {"content-type": wire.NPY}},
        400,
        "malformed .npy body",
    ),
    (
        "npy booleans",
        ACTIONS_URL,
        {
            "content": _npy(np.ones((2, 4), bool)),
            "headers": {"content-type": wire.NPY},
        },
        422,
        "expected numbers, got booleans",
    ),
    (
        "npy 0-d",
        ACTIONS_URL,
        {"content": _npy(np.float32(1.0)), "headers": {"content-type": wire.NPY}},
        422,
        "0-d array",
    ),
    (
        "JSON nested 5000 deep",  # RecursionError in json.loads, unless measured first
        ACTION_URL,
        {"content": b'{"observation": ' + b"[" * 5000 + b"]" * 5000 + b"}", "headers": JSON},
        400,
        "nested 5001 deep",
    ),
    (
        "JSON nested deep inside an unknown key",
        ACTION_URL,
        {"content": b'{"x": ' + b"{" * 3000 + b"}" * 3000 + b"}", "headers": JSON},
        400,
        "at most 32 levels",
    ),
    (
        "integer of 5000 digits in observation",  # int() refuses over 4300 digits
        ACTION_URL,
        {"content": b'{"observation": [' + b"9" * 5000 + b", 0, 0, 0]}", "headers": JSON},
        422,
        "at most 32 digits",
    ),
    (
        "integer of 5000 digits in observations",
        ACTIONS_URL,
        {"content": b'{"observations": [[1, 0, 0, -' + b"9" * 5000 + b"]]}", "headers": JSON},
        422,
        "at most 32 digits",
    ),
    (
        "integer of 5000 digits as seed",
        ACTION_URL,
        {
            "content": b'{"observation": [0, 0, 0, 0], "seed": ' + b"1" * 5000 + b"}",
            "headers": JSON,
        },
        422,
        "at most 32 digits",
    ),
    (
        "boolean in a float observation",  # numpy would make [true, 0.5] into [1.0, 0.5]
        ACTION_URL,
        {"json": {"observation": [True, 0.0, 0.0, 0.0]}},
        422,
        "observation[0]: expected a number, got a boolean",
    ),
    (
        "booleans in a batch",
        ACTIONS_URL,
        {"json": {"observations": [CARTPOLE_OBS, [0.0, False, 0.0, 0.0]]}},
        422,
        "observations[1][1]: expected a number, got a boolean",
    ),
    (
        "boolean as seed",
        ACTION_URL,
        {"json": {"observation": CARTPOLE_OBS, "seed": True}},
        422,
        "seed",
    ),
    (
        "number as explore",
        ACTION_URL,
        {"json": {"observation": CARTPOLE_OBS, "explore": 1}},
        422,
        "explore",
    ),
    (
        "npy wrong shape",
        ACTIONS_URL,
        {
            "content": _npy(np.zeros((3, 5), np.float32)),
            "headers": {"content-type": wire.NPY},
        },
        422,
        "expected shape (4,)",
    ),
]


@pytest.mark.parametrize(
    ("case", "url", "kwargs", "status", "message"), BAD_INPUTS, ids=[c[0] for c in BAD_INPUTS]
)
def test_bad_input_is_a_clear_4xx_and_the_next_request_works(
    client: Client, case: str, url: str, kwargs: dict[str, Any], status: int, message: str
) -> None:
    answer = client.request("POST", url, **kwargs)
    assert answer.status_code == status, (case, answer.text)
    assert message in answer.json()["detail"], (case, answer.json())
    good = client.request("POST", ACTION_URL, json={"observation": CARTPOLE_OBS})
    assert good.status_code == 200


def test_bearer_token(registry: PolicyRegistry) -> None:
    c = Client(create_app(registry, ServingSettings(token="s3cret")))
    try:
        body = {"observation": CARTPOLE_OBS}
        assert c.request("POST", ACTION_URL, json=body).status_code == 401
        wrong = {wire.AUTHORIZATION: wire.bearer("nope")}
        assert c.request("POST", ACTION_URL, json=body, headers=wrong).status_code == 401
        right = {wire.AUTHORIZATION: wire.bearer("s3cret")}
        assert c.request("POST", ACTION_URL, json=body, headers=right).status_code == 200
        assert c.request("GET", wire.HEALTHZ).status_code == 200  # probes need no token
    finally:
        c.close()


def test_public_surface() -> None:
    assert sorted(serving.__all__) == sorted(set(serving.__all__))
    for name in serving.__all__:
        assert hasattr(serving, name)
    assert PolicyRuntime.__module__ == "serving.runtime"
    assert json.dumps(ServingSettings().__dict__)


def test_registry_reload_swaps_good_and_keeps_old_on_bad(
    artifacts: dict[str, tuple[Path, Path]], tmp_path: Path
) -> None:
    import shutil

    cartpole, dqn = artifacts["cartpole"][1], artifacts["dqn"][1]
    registry = PolicyRegistry.from_paths({"p": cartpole})
    first = registry.get("p")
    assert first is not None
    assert registry.reload({"p": dqn}) == {}
    swapped = registry.get("p")
    assert swapped is not None and swapped.version != first.version
    broken = tmp_path / "broken"
    shutil.copytree(cartpole, broken)
    (broken / "model.onnx").write_bytes(b"not a model")
    failures = registry.reload({"p": broken})
    assert "model.onnx" in failures["p"]
    assert registry.get("p") is swapped
    assert "model.onnx" in registry.describe("p", 1)["last_reload_error"]
    with pytest.raises(ValueError, match=r"model\.onnx"):
        registry.reload({"new": broken})
    assert registry.get("new") is None


def test_observer_sees_every_policy_request(registry: PolicyRegistry) -> None:
    seen: list[tuple[str, str, int]] = []
    c = Client(create_app(registry, observer=lambda *event: seen.append(event)))
    try:
        c.request("POST", ACTION_URL, json={"observation": CARTPOLE_OBS})
        c.request("POST", ACTION_URL, json={"observation": [1.0]})
        c.request("POST", wire.action_path("nope"), json={"observation": [1.0]})
        c.request("GET", wire.HEALTHZ)
    finally:
        c.close()
    runtime = registry.get("cartpole")
    assert runtime is not None
    assert seen == [
        ("cartpole", runtime.version, 200),
        ("cartpole", runtime.version, 422),
        ("nope", "unknown", 404),
    ]


async def _chunks(body: bytes, size: int) -> Any:
    for start in range(0, len(body), size):
        yield body[start : start + size]


def test_bodies_sent_in_chunks(client: Client) -> None:
    body = json.dumps({"observation": CARTPOLE_OBS}).encode()
    whole = client.request("POST", ACTION_URL, content=body, headers=JSON)
    chunked = client.request("POST", ACTION_URL, content=_chunks(body, 7), headers=JSON)
    assert chunked.status_code == 200, chunked.text
    assert chunked.json() == whole.json()
    # No Content-Length to refuse early: the limit (64 KiB here) is enforced while reading.
    big = b'{"observations": [' + b"0," * 40_000 + b"0]}"
    refused = client.request("POST", ACTIONS_URL, content=_chunks(big, 4096), headers=JSON)
    assert refused.status_code == 413
    assert "exceeds the limit of 65536 bytes" in refused.json()["detail"]


async def _slow_chunks(body: bytes, size: int, pause_s: float) -> Any:
    for start in range(0, len(body), size):
        await asyncio.sleep(pause_s)
        yield body[start : start + size]


def test_a_body_that_arrives_too_slowly_gets_408_and_the_next_request_works(
    registry: PolicyRegistry,
) -> None:
    # The app's own deadline, on by default (10 s): it holds where no ingress buffers the body
    # (Serve's proxy, the replica's direct port, a body larger than HAProxy's buffer).
    assert ServingSettings().body_timeout_s == 10.0
    c = Client(create_app(registry, ServingSettings(body_timeout_s=0.3)))
    try:
        body = json.dumps({"observation": CARTPOLE_OBS}).encode()
        slow = c.request("POST", ACTION_URL, content=_slow_chunks(body, 4, 0.05), headers=JSON)
        assert slow.status_code == 408, slow.text
        assert slow.json()["detail"] == "the request body did not arrive within 0.3 s"
        assert slow.headers["connection"] == "close"
        # A body whose chunks keep coming just as slowly, but which ends in time, is answered.
        quick = c.request("POST", ACTION_URL, content=_slow_chunks(body, 64, 0.05), headers=JSON)
        assert quick.status_code == 200, quick.text
    finally:
        c.close()


def test_single_action_answer_headers(client: Client) -> None:
    answer = client.request("POST", ACTION_URL, json={"observation": CARTPOLE_OBS})
    assert answer.headers["content-type"] == wire.JSON
    assert int(answer.headers["content-length"]) == len(answer.content)
    assert answer.headers[wire.BATCH_HEADER] == "1"


def test_compute_routes_are_matched_first(registry: PolicyRegistry) -> None:
    # Ray Serve tries the app's routes in order to name each request's route.
    paths = [getattr(route, "path", "") for route in create_app(registry).router.routes]
    assert paths[:2] == [wire.ACTION_ROUTE, wire.ACTIONS_ROUTE]
    assert {"/docs", "/openapi.json", "/healthz"} <= set(paths)


def test_the_wire_names() -> None:
    """The protocol's names, spelled out once: server, clients and tests read them from wire."""
    assert wire.NPY == "application/x-npy"
    assert wire.JSON == "application/json"
    assert (wire.POLICY_HEADER, wire.VERSION_HEADER) == ("X-Policy", "X-Policy-Version")
    assert wire.BATCH_HEADER == "X-Batched-Requests"
    assert wire.bearer("t") == "Bearer t"
    assert (wire.HEALTHZ, wire.READYZ, wire.POLICIES) == ("/healthz", "/readyz", "/v1/policies")
    assert wire.policy_path("p") == "/v1/policies/p"
    assert wire.action_path("p") == "/v1/policies/p/compute_action"
    assert wire.actions_path("p") == "/v1/policies/p/compute_actions"
    assert wire.ACTION_ROUTE == "/v1/policies/{name}/compute_action"
    assert wire.ACTIONS_ROUTE == "/v1/policies/{name}/compute_actions"
