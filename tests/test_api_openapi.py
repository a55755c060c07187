"""/openapi.json describes the API as it answers (issue 8 §3); schemathesis checks the rest."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from fastapi.testclient import TestClient

from ceap.api import create_app
from ceap.store import Store, open_store

KEYED = {("get", "/v1/customers/{customer_id}/candidates"): {"200", "401", "403", "422"},
         ("post", "/v1/candidates:batch"): {"200", "400", "401", "403", "422"},
         ("get", "/v1/customers/{customer_id}/inbox"): {"200", "401", "403", "422"},
         ("get", "/v1/customers/{customer_id}/journeys"): {"200", "401", "403", "422"},
         ("post", "/v1/customers/{customer_id}/inbox/read"): {"200", "400", "401", "403", "422"},
         ("post", "/v1/receipts"): {"200", "400", "401", "403", "404", "422"},
         ("post", "/v1/engagements"): {"200", "400", "401", "403", "422"},
         ("post", "/v1/events"): {"202", "400", "401", "403", "413", "422", "503"},
         ("post", "/v1/events/eventbridge"): {"202", "400", "401", "403", "413", "422", "503"},
         ("get", "/v1/admin/deliveries"): {"200", "401", "403", "422"},
         ("post", "/v1/admin/deliveries/resend"): {"200", "400", "401", "403", "409", "422"},
         ("post", "/v1/admin/deliveries/mark-sent"): {"200", "400", "401", "403", "409", "422"},
         ("post", "/v1/admin/deliveries/drop"): {"200", "400", "401", "403", "409", "422"},
         ("get", "/v1/admin/apikeys"): {"200", "401", "403"},
         ("post", "/v1/admin/apikeys/{key_id}/revoke"): {"200", "400", "401", "403", "404", "422"},
         ("get", "/v1/admin/audit"): {"200", "401", "403", "422"},
         ("get", "/v1/admin/customers/{customer_id}/consent"): {"200", "401", "403", "422"},
         ("get", "/v1/admin/customers/{customer_id}/export"): {"200", "401", "403", "422"},
         ("delete", "/v1/admin/customers/{customer_id}"): {"200", "401", "403", "422"}}
#: the scope each keyed route needs (docs/api.md#api-keys)
SCOPES = {"read": ("/v1/customers/", "/v1/candidates:batch"), "ingest": ("/v1/receipts", "/v1/engagements",
                                                                        "/v1/events"),
          "admin": ("/v1/admin/",)}
PUBLIC = {("get", "/v1/unsubscribe"): {"200", "400", "403", "503"},
          ("post", "/v1/unsubscribe"): {"200", "400", "403", "503"},
          ("get", "/v1/preferences"): {"200", "400", "403", "422", "503"},
          ("post", "/v1/preferences"): {"200", "400", "403", "422", "503"},
          ("get", "/v1/preferences/page"): {"200", "400", "403", "503"},
          ("post", "/v1/preferences/page"): {"200", "400", "403", "503"},
          ("get", "/healthz"): {"200"}}
TWILIO = {("post", "/v1/webhooks/twilio/sms/{tenant_id}"): {"200", "403", "422", "503"},
          ("post", "/v1/webhooks/twilio/status/{tenant_id}"): {"200", "403", "404", "422", "503"}}


@pytest.fixture
def store(sqlite_url: str) -> Store:
    s = open_store(sqlite_url)
    yield s
    s.close()


def spec(store: Store, **kwargs: Any) -> dict[str, Any]:
    return TestClient(create_app(store, **kwargs)).get("/openapi.json").json()


def test_api_keys_are_a_bearer_security_scheme(store: Store) -> None:
    doc = spec(store)
    schemes = doc["components"]["securitySchemes"]
    [bearer] = [name for name, s in schemes.items() if (s["type"], s.get("scheme")) == ("http", "bearer")]
    for (method, path), _ in KEYED.items():
        op = doc["paths"][path][method]
        [scope] = [name for name, prefixes in SCOPES.items() if path.startswith(prefixes)]
        assert op["security"] == [{bearer: [scope]}], (method, path)  # OpenAPI 3.1: a role
        assert op["x-required-scope"] == scope and f"scope: `{scope}`" in op["description"]
        assert all(p["in"] != "header" for p in op.get("parameters", [])), (method, path)
    for (method, path), _ in PUBLIC.items():
        assert "security" not in doc["paths"][path][method], (method, path)
    for (method, path), _ in TWILIO.items():
        [requirement] = doc["paths"][path][method]["security"]
        scheme = schemes[next(iter(requirement))]
        assert (scheme["type"], scheme["in"], scheme["name"]) == ("apiKey", "header", "X-Twilio-Signature")


def test_without_keys_no_security_is_declared(store: Store) -> None:
    doc = spec(store, auth=False)
    assert not any("security" in op for ops in doc["paths"].values() for op in ops.values())


def test_every_status_the_api_answers_is_declared(store: Store) -> None:
    doc = spec(store)
    for (method, path), codes in {**KEYED, **PUBLIC, **TWILIO}.items():
        assert set(doc["paths"][path][method]["responses"]) == codes, (method, path)
    events = doc["paths"]["/v1/events"]["post"]["responses"]
    assert events["202"]["content"]["application/json"]["schema"] == events["422"]["content"][
        "application/json"]["schema"]   # both the ingest result


def test_ingest_routes_declare_their_request_body(store: Store) -> None:
    doc = spec(store)
    event, envelope = ({"$ref": f"#/components/schemas/{name}"}
                       for name in ("EventIn", "EventBridgeEnvelope"))
    for path, one in (("/v1/events", {"anyOf": [event, envelope]}), ("/v1/events/eventbridge", envelope)):
        body = doc["paths"][path]["post"]["requestBody"]
        assert body["required"] is True
        schema = body["content"]["application/json"]["schema"]
        assert schema["anyOf"] == [one, {"type": "array", "items": one, "maxItems": 10_000}]
        refs = json.dumps(schema) + json.dumps(doc["components"]["schemas"])
        for name in re.findall(r"#/components/schemas/(\w+)", refs):   # every reference resolves
            assert name in doc["components"]["schemas"]
    event = doc["components"]["schemas"]["EventIn"]
    assert set(event["required"]) == {"id", "type", "ts"} and event["additionalProperties"] is False


def test_options_on_unsubscribe_allows_get_and_post(store: Store) -> None:
    answer = TestClient(create_app(store)).options("/v1/unsubscribe")
    assert answer.status_code == 405
    assert {m.strip() for m in answer.headers["allow"].split(",")} >= {"GET", "POST"}
    put = TestClient(create_app(store)).put("/v1/unsubscribe")
    assert put.status_code == 405 and "GET" in put.headers["allow"]
