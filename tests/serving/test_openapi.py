"""The OpenAPI document says what the routes really answer (schemathesis checks it live)."""

from __future__ import annotations

from typing import Any

import pytest

from serving import PolicyRegistry, ServingSettings, create_app, wire


def _spec(token: str | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = create_app(PolicyRegistry(), ServingSettings(token=token)).openapi()
    return spec


def test_every_error_answer_has_the_one_documented_body() -> None:
    spec = _spec()
    assert "HTTPValidationError" not in spec["components"]["schemas"]  # FastAPI's list form
    assert spec["components"]["schemas"]["ErrorAnswer"]["properties"]["detail"]["type"] == "string"
    for path, operations in spec["paths"].items():
        for operation in operations.values():
            for status, answer in operation["responses"].items():
                if status.startswith(("4", "5")) and path != wire.READYZ:
                    ref = answer["content"][wire.JSON]["schema"]["$ref"]
                    assert ref.endswith("/ErrorAnswer"), (path, status)


@pytest.mark.parametrize("route", [wire.ACTION_ROUTE, wire.ACTIONS_ROUTE])
def test_compute_routes_list_every_status_they_answer(route: str) -> None:
    responses = _spec()["paths"][route]["post"]["responses"]
    assert set(responses) == {"200", "400", "401", "404", "408", "413", "415", "422", "503"}
    assert "Retry-After" in responses["503"]["headers"]
    assert "500" not in responses


def test_npy_bodies_and_answers_are_documented() -> None:
    operation = _spec()["paths"][wire.ACTIONS_ROUTE]["post"]
    assert set(operation["requestBody"]["content"]) == {wire.JSON, wire.NPY}
    assert set(operation["responses"]["200"]["content"]) == {wire.JSON, wire.NPY}
    assert [p["name"] for p in operation["parameters"]] == ["name", "explore"]


def test_the_request_schema_is_strict() -> None:
    schema = _spec()["paths"][wire.ACTION_ROUTE]["post"]["requestBody"]["content"][wire.JSON]
    body = schema["schema"]
    assert body["additionalProperties"] is False
    assert body["properties"]["explore"]["type"] == "boolean"
    seed = body["properties"]["seed"]["anyOf"][0]
    assert (seed["type"], seed["minimum"], seed["maximum"]) == ("integer", 0, 2**63 - 1)


def test_the_bearer_token_is_in_the_document_when_the_service_has_one() -> None:
    assert "securitySchemes" not in _spec()["components"]
    spec = _spec(token="s3cret")
    assert spec["components"]["securitySchemes"]["bearer"] == {"type": "http", "scheme": "bearer"}
    for path, operations in spec["paths"].items():
        for operation in operations.values():
            assert ("security" in operation) == path.startswith(wire.POLICIES), path
