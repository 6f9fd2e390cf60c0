"""Socket.IO v2 clients (Engine.IO v3) against the real hub on a live server: the npm
``socket.io-client@2`` over the websocket transport, raw ``EIO=3`` frames as the seed shows
them, and the ``EIO=4`` open packet for comparison."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from tests.e2e.conftest import client_for
from tests.e2e.sockets import token_of
from tests.e2e.support import fresh_address, sid_of

pytestmark = pytest.mark.asyncio

WAIT = 5.0
FIRST_LINE_WAIT = 15.0  # node's start-up plus the connection
INSTALL_SECONDS = 180
REPO = Path(__file__).resolve().parents[2]
NODE_DIR = REPO / ".cache" / "node"
CLIENT_PACKAGE = NODE_DIR / "node_modules" / "socket.io-client" / "package.json"
SCRIPT = Path(__file__).parent / "node" / "v2_client.js"
UNAUTHORIZED = {
    "success": False,
    "code": "401",
    "error": "UNAUTHORIZED",
    "message": "Unauthorized",
    "tags": ["error_unauthorized"],
}


def _skip(reason: str) -> None:
    print(f"skipping the Node Socket.IO v2 client tests: {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def node() -> str:
    """The ``node`` executable, with ``socket.io-client@2`` installed under ``.cache/node``."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        _skip("node and npm are not installed")
    assert node is not None and npm is not None
    if not CLIENT_PACKAGE.exists():
        command = [npm, "install", "--prefix", str(NODE_DIR), "socket.io-client@2"]
        try:
            done = subprocess.run(  # noqa: S603 - fixed arguments, no shell
                [*command, "--no-audit", "--no-fund"],
                capture_output=True,
                text=True,
                timeout=INSTALL_SECONDS,
                check=False,
            )
        except subprocess.TimeoutExpired:
            _skip(f"npm install socket.io-client@2 took over {INSTALL_SECONDS} s")
        else:
            if done.returncode != 0 or not CLIENT_PACKAGE.exists():
                tail = (done.stderr or done.stdout).strip()[-500:]
                _skip(f"npm install socket.io-client@2 failed ({done.returncode}): {tail}")
    return node


class NodeClient:
    """The running ``v2_client.js``: its stdout read one JSON line at a time."""

    def __init__(self, process: asyncio.subprocess.Process, stderr_path: Path):
        self.process = process
        self.stderr_path = stderr_path
        self.seen: list[dict[str, Any]] = []

    def _stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")[-2000:]

    async def next(self, seconds: float = WAIT) -> dict[str, Any]:
        assert self.process.stdout is not None
        try:
            raw = await asyncio.wait_for(self.process.stdout.readline(), seconds)
        except TimeoutError:
            raise AssertionError(f"no line from node in {seconds} s; saw {self.seen}") from None
        assert raw, f"node ended after {self.seen}; stderr: {self._stderr()}"
        record: dict[str, Any] = json.loads(raw)
        self.seen.append(record)
        return record

    async def exit_code(self) -> int:
        return await asyncio.wait_for(self.process.wait(), WAIT)


@asynccontextmanager
async def node_v2(
    node: str,
    url: str,
    store: str,
    changes: int,
    stderr_path: Path,
    cookie: str | None = None,
    timeout_ms: int = 15000,
) -> AsyncIterator[NodeClient]:
    args = [str(SCRIPT), url, store, str(changes), str(timeout_ms)]
    if cookie is not None:
        args.append(cookie)
    env = {**os.environ, "NODE_PATH": str(NODE_DIR / "node_modules")}
    with stderr_path.open("wb") as stderr:
        process = await asyncio.create_subprocess_exec(
            node, *args, stdout=asyncio.subprocess.PIPE, stderr=stderr, env=env
        )
    try:
        yield NodeClient(process, stderr_path)
    finally:
        if process.returncode is None:
            process.kill()  # SIGKILL to its PID
        await asyncio.wait_for(process.wait(), WAIT)


async def sign_in_over_http(base_url: str, login: str, password: str) -> str:
    """The ``sid`` from the Set-Cookie of a real ``POST /api/v1/auth``."""
    async with httpx.AsyncClient(base_url=base_url, timeout=WAIT) as http:
        response = await http.post("/api/v1/auth", json={"login": login, "password": password})
    assert response.status_code == 200, response.text
    return sid_of(response)


def assert_change(
    event: dict[str, Any], op: str, store: str, subscription: str, entity_id: str
) -> None:
    assert event["op"] == op and event["store"] == store
    assert event["subscription"] == subscription and event["id"] == entity_id
    assert isinstance(event["ts"], int) and isinstance(event["resume"], str)


# --- the npm socket.io-client@2 --------------------------------------------------------------


async def test_node_v2_client_with_cookie_sees_create_update_delete(
    node, live, make_user, store, tmp_path
):
    user = await make_user()
    sid = await sign_in_over_http(live.url, user.login, user.password)
    # A cookie-authenticated write must say it is JSON, DELETE included (README).
    headers = {"Cookie": f"sid={sid}", "Content-Type": "application/json"}
    async with (
        node_v2(node, live.url, store, 3, tmp_path / "node.err", cookie=f"sid={sid}") as client,
        httpx.AsyncClient(base_url=live.url, headers=headers, timeout=WAIT) as http,
    ):
        assert (await client.next(FIRST_LINE_WAIT))["type"] == "connect"
        ack = await client.next()
        assert ack["type"] == "ack" and ack["data"]["success"] is True
        subscription = ack["data"]["subscription"]
        assert isinstance(subscription, str) and subscription

        made = (await http.post(f"/api/v1/{store}", json={"name": "a", "n": 1})).json()
        event = await client.next()
        assert event["type"] == "change"
        assert_change(event["data"], "create", store, subscription, made["_id"])
        assert event["data"]["entity"] == made

        url = f"/api/v1/{store}/{made['_id']}"
        patched = (await http.patch(url, json={"n": 2, "tags": ["x"]})).json()
        event = await client.next()
        assert_change(event["data"], "update", store, subscription, made["_id"])
        assert event["data"]["entity"] == patched and patched["n"] == 2

        assert (await http.delete(url)).status_code == 200
        event = await client.next()
        assert_change(event["data"], "delete", store, subscription, made["_id"])
        assert "entity" not in event["data"]

        assert await client.exit_code() == 0, client.seen


async def test_node_v2_client_with_token_in_the_query(node, live, make_user, store, tmp_path):
    user = await make_user()
    url = f"{live.url}?token={token_of(user)}"
    async with node_v2(node, url, store, 1, tmp_path / "node.err") as client:
        assert (await client.next(FIRST_LINE_WAIT))["type"] == "connect"
        ack = await client.next()
        assert ack["data"]["success"] is True
        made = (await user.post(f"/api/v1/{store}", json={"q": True})).json()
        event = await client.next()
        assert_change(event["data"], "create", store, ack["data"]["subscription"], made["_id"])
        assert event["data"]["entity"] == made
        assert await client.exit_code() == 0


@pytest.mark.parametrize("cookie", [None, "sid=no-such-session"])
async def test_node_v2_client_without_a_session_gets_an_error_event(
    node, live, store, tmp_path, cookie
):
    async with node_v2(node, live.url, store, 1, tmp_path / "node.err", cookie=cookie) as client:
        error = await client.next(FIRST_LINE_WAIT)
        assert error["type"] == "error", client.seen
        assert error["data"]["message"] == "Unauthorized"
        assert {k: error["data"][k] for k in UNAUTHORIZED} == UNAUTHORIZED
        assert (await client.next())["type"] == "disconnect"
        assert await client.exit_code() == 2
    assert not any(line["type"] in ("connect", "ack") for line in client.seen)


# --- raw Engine.IO v3 frames ----------------------------------------------------------------


async def recv(ws: ClientConnection, seconds: float = WAIT) -> str:
    frame = await asyncio.wait_for(ws.recv(), seconds)
    assert isinstance(frame, str), frame
    return frame


async def recv_json(ws: ClientConnection, prefix: str) -> Any:
    frame = await recv(ws)
    assert frame.startswith(prefix), frame
    return json.loads(frame[len(prefix) :])


def ws_url(port: int, eio: str, query: str = "") -> str:
    return f"ws://127.0.0.1:{port}/socket.io/?EIO={eio}&transport=websocket{query}"


async def open_eio3(
    port: int, query: str = "", headers: dict[str, str] | None = None
) -> ClientConnection:
    return await connect(
        ws_url(port, "3", query), additional_headers=headers or {}, open_timeout=WAIT
    )


def assert_handshake(handshake: dict[str, Any]) -> None:
    assert isinstance(handshake["sid"], str) and handshake["sid"]
    assert handshake["upgrades"] == []
    assert handshake["pingInterval"] == 25000
    assert handshake["pingTimeout"] == 60000


async def test_raw_eio3_session_as_the_seed_describes(live, make_user, store):
    user = await make_user()
    sid = await sign_in_over_http(live.url, user.login, user.password)
    async with await open_eio3(live.port, headers={"Cookie": f"sid={sid}"}) as ws:
        assert_handshake(await recv_json(ws, "0"))
        assert await recv(ws) == "40"

        started = time.monotonic()
        await ws.send("2")
        assert await recv(ws, seconds=1.0) == "3"
        assert time.monotonic() - started < 1.0
        await ws.send("2probe")
        assert await recv(ws, seconds=1.0) == "3probe"

        await ws.send("421" + json.dumps(["subscribe", {"store": store}]))
        [ack] = await recv_json(ws, "431")
        assert ack["success"] is True
        assert isinstance(ack["subscription"], str) and ack["subscription"]

        made = (await user.post(f"/api/v1/{store}", json={"seed": "v2"})).json()
        name, event = await recv_json(ws, "42")
        assert name == "change"
        assert_change(event, "create", store, ack["subscription"], made["_id"])
        assert event["entity"] == made

        # An event without an ack id gets no ack; events are handled in arrival order, so
        # once the acked subscribe after it is answered, the unsubscribe has taken effect.
        other = f"{store}b"
        await ws.send("42" + json.dumps(["unsubscribe", {"subscription": ack["subscription"]}]))
        await ws.send("427" + json.dumps(["subscribe", {"store": other}]))
        [second] = await recv_json(ws, "437")
        assert second["success"] is True
        await user.post(f"/api/v1/{store}", json={"seed": "unseen"})
        marker = (await user.post(f"/api/v1/{other}", json={"seed": "seen"})).json()
        name, event = await recv_json(ws, "42")  # changes arrive in database order
        assert_change(event, "create", other, second["subscription"], marker["_id"])


@pytest.mark.parametrize("how", ["query", "bearer"])
async def test_raw_eio3_token_authentication(live, make_user, store, how):
    user = await make_user()
    token = token_of(user)
    if how == "query":
        opened = open_eio3(live.port, query=f"&token={token}")
    else:
        opened = open_eio3(live.port, headers={"Authorization": f"Bearer {token}"})
    async with await opened as ws:
        assert_handshake(await recv_json(ws, "0"))
        assert await recv(ws) == "40"
        await ws.send("420" + json.dumps(["subscribe", {"store": store}]))
        [ack] = await recv_json(ws, "430")
        assert ack["success"] is True
        made = (await user.post(f"/api/v1/{store}", json={"how": how})).json()
        name, event = await recv_json(ws, "42")
        assert (name, event["op"], event["entity"]) == ("change", "create", made)


@pytest.mark.parametrize(
    ("query", "headers"),
    [
        ("", {}),
        ("&token=not-a-jwt", {}),
        ("", {"Cookie": "sid=no-such-session"}),
        ("", {"Authorization": "Basic eDp5"}),
    ],
)
async def test_raw_eio3_without_credentials_is_opened_then_refused(live, query, headers):
    async with await open_eio3(live.port, query, headers) as ws:
        assert_handshake(await recv_json(ws, "0"))
        error = await recv_json(ws, "44")
        assert {k: error[k] for k in UNAUTHORIZED} == UNAUTHORIZED
        with pytest.raises(ConnectionClosed):
            await recv(ws)
        assert ws.close_code == 1008


async def test_raw_eio3_cookie_socket_from_another_site_is_refused(live, make_user, store):
    user = await make_user()
    sid = await sign_in_over_http(live.url, user.login, user.password)
    cookie = {"Cookie": f"sid={sid}"}
    async with await open_eio3(
        live.port, headers={**cookie, "Origin": "http://evil.example"}
    ) as ws:
        assert_handshake(await recv_json(ws, "0"))
        error = await recv_json(ws, "44")
        assert {k: error[k] for k in UNAUTHORIZED} == UNAUTHORIZED
    own = {**cookie, "Origin": f"http://127.0.0.1:{live.port}"}
    async with await open_eio3(live.port, headers=own) as ws:
        assert_handshake(await recv_json(ws, "0"))
        assert await recv(ws) == "40"


async def test_raw_eio3_socket_is_closed_when_its_session_ends(app, live, make_user, store):
    user = await make_user()
    sid = await sign_in_over_http(live.url, user.login, user.password)
    async with await open_eio3(live.port, headers={"Cookie": f"sid={sid}"}) as ws:
        await recv_json(ws, "0")
        assert await recv(ws) == "40"
        await ws.send("421" + json.dumps(["subscribe", {"store": store}]))
        assert (await recv_json(ws, "431"))[0]["success"] is True
        started = time.monotonic()
        headers = {"Cookie": f"sid={sid}", "Content-Type": "application/json"}
        async with client_for(app, fresh_address(), headers=headers) as other_instance:
            assert (await other_instance.delete("/api/v1/auth")).status_code == 200
        # "41" tells a v2 client the server ended the namespace, so it does not reconnect.
        assert await recv(ws, seconds=5.0) == "41"
        with pytest.raises(ConnectionClosed):
            await recv(ws)
        assert time.monotonic() - started < 5.0


# --- Engine.IO v4 ---------------------------------------------------------------------------


async def test_raw_eio4_open_packet_and_connect(live, make_user, store):
    user = await make_user()
    async with await connect(ws_url(live.port, "4"), open_timeout=WAIT) as ws:
        assert_handshake(await recv_json(ws, "0"))
        await ws.send("40" + json.dumps({"token": token_of(user)}))
        connected = await recv_json(ws, "40")
        assert isinstance(connected["sid"], str) and connected["sid"]
        await ws.send("420" + json.dumps(["subscribe", {"store": store}]))
        [ack] = await recv_json(ws, "430")
        assert ack["success"] is True
        made = (await user.post(f"/api/v1/{store}", json={"eio": 4})).json()
        name, event = await recv_json(ws, "42")
        assert (name, event["op"], event["entity"]) == ("change", "create", made)


async def test_raw_eio4_connect_without_credentials_is_refused(live):
    async with await connect(ws_url(live.port, "4"), open_timeout=WAIT) as ws:
        assert_handshake(await recv_json(ws, "0"))
        await ws.send("40")
        refused = await recv_json(ws, "44")
        assert refused["message"] == "Unauthorized"
        assert {k: refused["data"][k] for k in UNAUTHORIZED} == UNAUTHORIZED
