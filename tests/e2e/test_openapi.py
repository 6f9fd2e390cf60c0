"""The OpenAPI document: valid OpenAPI 3.1, true to every defined store, and true to the
server's behaviour, as schemathesis finds it from outside (as an admin and as a user)."""

from __future__ import annotations

import asyncio
import re
import sys
from asyncio.subprocess import PIPE, STDOUT
from pathlib import Path

import httpx
import pytest
from openapi_spec_validator import validate

from tests.e2e.live import ADMIN_PASSWORD, process_env, server_process
from tests.helpers import unique

pytestmark = pytest.mark.asyncio

DEALS = {
    "title": "Deals",
    "schema": {
        "type": "object",
        "required": ["title"],
        "properties": {
            "title": {"type": "string", "minLength": 1, "maxLength": 80},
            "amount": {"type": "number", "minimum": 0},
            "stage": {"enum": ["new", "won", "lost"], "default": "new"},
            "ref": {"type": "string", "readOnly": True},
            "contact": {"$ref": "#/$defs/contact"},
        },
        "$defs": {
            "contact": {
                "type": "object",
                "properties": {"email": {"type": "string", "format": "email"}},
            }
        },
    },
    "unique": ["ref"],
}


async def test_the_document_is_valid_and_follows_the_definitions(client, admin, store):
    before = (await client.get("/api/v1/openapi.json")).json()  # no sign-in needed
    validate(before)
    assert before["openapi"] == "3.1.0"
    for path in ("/api/v1/auth", "/api/v1/_users", "/api/v1/_stores/{store}", "/api/v1/{store}"):
        assert path in before["paths"], path
    listing = before["paths"]["/api/v1/{store}"]["get"]
    names = {p["name"] for p in listing["parameters"]}
    assert {"limit", "offset", "only", "meta", "from", "to", "after"} <= names
    assert {"400", "401", "403", "503"} <= set(listing["responses"])
    assert f"/api/v1/{store}" not in before["paths"]

    assert (await admin.put(f"/api/v1/_stores/{store}", json=DEALS)).status_code == 200
    after = (await client.get("/api/v1/openapi.json")).json()
    validate(after)
    assert {f"/api/v1/{store}", f"/api/v1/{store}/{{id}}"} <= set(after["paths"])
    schemas = after["components"]["schemas"]
    fields = schemas[f"store.{store}"]
    assert fields["properties"]["title"] == DEALS["schema"]["properties"]["title"]
    # Local references now point into the store's component.
    contact = fields["properties"]["contact"]["$ref"]
    assert contact == f"#/components/schemas/store.{store}/$defs/contact"
    entity = schemas[f"store.{store}.entity"]
    assert entity["properties"]["ref"]["readOnly"] is True
    assert entity["properties"]["_id"]["readOnly"] is True
    assert "createdAt" in entity["properties"]
    created = after["paths"][f"/api/v1/{store}"]["post"]
    body_schema = created["requestBody"]["content"]["application/json"]["schema"]
    assert body_schema == {"$ref": f"#/components/schemas/store.{store}.input"}
    assert schemas[f"store.{store}.input"]["required"] == ["title"]
    assert "409" in created["responses"]

    assert (await admin.delete(f"/api/v1/_stores/{store}")).status_code == 200
    assert f"/api/v1/{store}" not in (await client.get("/api/v1/openapi.json")).json()["paths"]


async def test_the_reference_page_and_its_assets_are_served_locally(client):
    page = await client.get("/api/docs")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "/api/v1/openapi.json" in page.text
    assert "//" not in page.text.replace("http://", "").split("<body>")[0].replace("<!doctype", "")
    for asset in ("swagger-ui-bundle.js", "swagger-ui.css"):
        response = await client.get(f"/api/docs/assets/{asset}")
        assert response.status_code == 200 and len(response.content) > 10_000
    assert (await client.get("/api/docs/assets/../../../etc/passwd")).status_code == 404


async def _schemathesis(url: str, token: str, tmp_path: Path, who: str, store: str) -> None:
    command = [
        str(Path(sys.executable).parent / "schemathesis"),
        "run",
        f"{url}/api/v1/openapi.json",
        "--header",
        f"Authorization: Bearer {token}",
        "--checks",
        "not_a_server_error,status_code_conformance,content_type_conformance,"
        "response_schema_conformance,response_headers_conformance",
        "--include-path-regex",
        rf"^/api/v1/(\{{store\}}|{store}|_stores)",
        "--max-examples",
        "15",
        "--workers",
        "1",
        "--seed",
        "20261201",
        "--request-timeout",
        "20",
        "--max-failures",
        "20",
    ]
    process = await asyncio.create_subprocess_exec(
        *command, stdout=PIPE, stderr=STDOUT, cwd=tmp_path
    )
    try:
        async with asyncio.timeout(420):
            raw, _ = await process.communicate()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    output = raw.decode(errors="replace")
    (tmp_path / f"schemathesis-{who}.log").write_text(output)
    assert process.returncode == 0, f"schemathesis as {who}:\n{output[-6000:]}"
    counts = re.search(r"(\d+) generated, (\d+) passed\n", output)
    assert counts and counts.group(1) == counts.group(2), output[-3000:]
    assert int(counts.group(1)) >= 300, output[-3000:]  # it really exercised the API


async def test_schemathesis_finds_the_server_true_to_its_document(mongodb_url, tmp_path):
    """Generic store paths, one defined store and the definitions API, fuzzed from the
    document: no server errors, and every status, content type, header and body documented."""
    env = process_env(mongodb_url, tmp_path / "data", unique("openapi"))
    store = "deals"
    async with (
        server_process(env, tmp_path / "server.log") as url,
        httpx.AsyncClient(base_url=url) as http,
    ):

        async def token(login: str, password: str) -> str:
            response = await http.post(
                "/api/v1/auth/token", json={"login": login, "password": password}
            )
            assert response.status_code == 200, response.text
            return str(response.json()["token"])

        admin = await token("admin", ADMIN_PASSWORD)
        headers = {"Authorization": f"Bearer {admin}"}
        defined = await http.put(f"/api/v1/_stores/{store}", json=DEALS, headers=headers)
        assert defined.status_code == 200, defined.text
        user = {"login": "fuzz-user", "password": "fuzz-password-1", "groups": ["g"]}
        assert (await http.post("/api/v1/_users", json=user, headers=headers)).status_code == 201
        ordinary = await token(user["login"], user["password"])
        for who, credential in (("admin", admin), ("user", ordinary)):
            await _schemathesis(url, credential, tmp_path, who, store)
