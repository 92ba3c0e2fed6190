"""The NATS client, imported lazily: URLs, a bounded connect, and the stream we ship to.

Only `journalstore.fleet` needs nats-py (the `[fleet]` extra); the core library never imports it.
"""

from __future__ import annotations

import asyncio
import json
import urllib.parse
from typing import TYPE_CHECKING, Any

from ..errors import StoreError
from .messages import SUBJECT_PREFIX

if TYPE_CHECKING:
    from nats.aio.client import Client

CONNECT_TIMEOUT = 5.0  # seconds for the first connection, all servers together
API_TIMEOUT = 5.0


class FleetError(StoreError):
    """Shipping or reading the fleet failed: no client library, a bad URL, no server, no stream."""


def require_nats() -> Any:
    """The `nats` module, or a FleetError saying how to install it."""
    try:
        import nats
    except ImportError:
        raise FleetError(
            "the fleet commands need the NATS client: pip install journalstore[fleet]"
        ) from None
    return nats


def parse_servers(url: str) -> list[str]:
    """`nats://HOST:PORT[,nats://HOST:PORT...]` as a list of server URLs; ValueError if malformed."""
    if not isinstance(url, str) or not url.strip():
        raise FleetError("no server URL given (expected nats://HOST:PORT)")
    servers: list[str] = []
    for raw in url.split(","):
        part = raw.strip()
        parsed = urllib.parse.urlsplit(part)
        try:
            port = parsed.port
        except ValueError:
            port = None
        if parsed.scheme not in ("nats", "tls") or not parsed.hostname or port is None or parsed.path not in ("", "/"):
            raise FleetError(f"bad server URL {part!r}: expected nats://HOST:PORT")
        servers.append(part)
    return servers


async def connect(url: str, *, timeout: float = CONNECT_TIMEOUT, reconnect_for: float = 60.0) -> Client:
    """Connect to the first server that answers, within `timeout` seconds; FleetError otherwise.

    Once connected the client reconnects by itself (to any listed server) for `reconnect_for`.
    """
    nats = require_nats()
    servers = parse_servers(url)
    wait = 0.25

    async def failed(_exc: Exception) -> None:  # keep nats-py from printing to stderr
        return None

    try:
        client: Client = await asyncio.wait_for(
            nats.connect(
                servers=servers,
                connect_timeout=min(timeout, 2.0),
                allow_reconnect=True,
                max_reconnect_attempts=max(1, int(reconnect_for / wait)),
                reconnect_time_wait=wait,
                error_cb=failed,
                name="journalstore",
            ),
            timeout,
        )
    except (TimeoutError, OSError) as exc:
        raise FleetError(
            f"cannot reach a NATS server at {url} within {timeout:g} s ({exc.__class__.__name__})"
        ) from None
    except Exception as exc:  # nats' own NoServersError and friends
        raise FleetError(f"cannot connect to {url}: {exc.__class__.__name__}: {exc}") from None
    return client


async def api(client: Client, subject: str, request: dict[str, Any] | None = None) -> dict[str, Any]:
    """One JetStream API request ($JS.API.*), its JSON answer."""
    data = b"" if request is None else json.dumps(request).encode()
    msg = await client.request(f"$JS.API.{subject}", data, timeout=API_TIMEOUT)
    answer = json.loads(msg.data) if msg.data else {}
    if not isinstance(answer, dict):
        raise FleetError(f"unexpected answer to $JS.API.{subject}")
    return answer


def api_error(answer: dict[str, Any]) -> tuple[int, str] | None:
    """(err_code, description) of a failed API answer, None on success."""
    error = answer.get("error")
    if not isinstance(error, dict):
        return None
    return int(error.get("err_code", 0)), str(error.get("description", "error"))


STREAM_NOT_FOUND = 10059


async def ensure_stream(client: Client, stream: str, replicas: int) -> dict[str, Any]:
    """The stream's info, creating it (subjects journalstore.>, atomic batches allowed) if missing.

    An existing stream that does not allow atomic batch publishing is updated to allow it.
    """
    info = await api(client, f"STREAM.INFO.{stream}")
    err = api_error(info)
    if err is None:
        config = info.get("config", {})
        if not config.get("allow_atomic"):
            config["allow_atomic"] = True
            info = await api(client, f"STREAM.UPDATE.{stream}", config)
            err = api_error(info)
            if err is not None:
                raise FleetError(f"stream {stream} does not allow atomic batches and cannot be updated: {err[1]}")
        return info
    if err[0] != STREAM_NOT_FOUND:
        raise FleetError(f"stream {stream}: {err[1]}")
    config = {
        "name": stream,
        "subjects": [f"{SUBJECT_PREFIX}.>"],
        "retention": "limits",
        "storage": "file",
        "num_replicas": replicas,
        "duplicate_window": 120_000_000_000,
        "allow_atomic": True,
        "allow_direct": True,
        "discard": "old",
    }
    info = await api(client, f"STREAM.CREATE.{stream}", config)
    err = api_error(info)
    if err is not None:
        if err[0] == 10058:  # created meanwhile by another shipper
            return await api(client, f"STREAM.INFO.{stream}")
        raise FleetError(f"cannot create stream {stream}: {err[1]}")
    return info


async def stream_info(client: Client, stream: str) -> dict[str, Any]:
    """The stream's info; FleetError if it does not exist."""
    info = await api(client, f"STREAM.INFO.{stream}")
    err = api_error(info)
    if err is not None:
        raise FleetError(f"stream {stream}: {err[1]}")
    return info


async def last_on_subject(client: Client, stream: str, subject: str) -> tuple[int, dict[str, str], bytes] | None:
    """(stream seq, headers, payload) of the last message on `subject`, or None if there is none."""
    return await get_message(client, stream, {"last_by_subj": subject}, subject)


async def get_message(
    client: Client, stream: str, request: dict[str, Any], subject: str
) -> tuple[int, dict[str, str], bytes] | None:
    """(stream seq, headers, payload) of the message a STREAM.MSG.GET request names, or None."""
    import base64

    answer = await api(client, f"STREAM.MSG.GET.{stream}", request)
    err = api_error(answer)
    if err is not None:
        if err[0] == 10037:  # no message found
            return None
        raise FleetError(f"stream {stream}: cannot read the last message of {subject}: {err[1]}")
    message = answer.get("message", {})
    headers = _parse_headers(base64.b64decode(message.get("hdrs") or b""))
    payload = base64.b64decode(message.get("data") or b"")
    return int(message["seq"]), headers, payload


def _parse_headers(raw: bytes) -> dict[str, str]:
    """NATS/1.0 header block -> dict (the first value of each name)."""
    out: dict[str, str] = {}
    lines = raw.decode("utf-8", "replace").split("\r\n")
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if sep and name.strip() and name.strip() not in out:
            out[name.strip()] = value.strip()
    return out
