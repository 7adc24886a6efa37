"""The FastAPI application: reads, ``POST /events``, health and metrics."""

from __future__ import annotations

import asyncio
import hmac
import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Annotated, Any

import redis
from fastapi import Depends, FastAPI, Header, HTTPException, Request, Response
from fastapi.responses import JSONResponse, PlainTextResponse
from pydantic import BaseModel, TypeAdapter
from starlette.concurrency import run_in_threadpool

from api_stub import setlist_routes, video_routes
from api_stub.deps import Detail, connections, error, or_detail
from api_stub.metrics import render_metrics
from events.schemas import Event, EventError, loads, parse_event
from stats.setlists import StateNeedsRebuild
from worker.connections import PROBE_CONNECTIONS, Connections
from worker.eventlog import LOG_ERRORS, log_unusable
from worker.metrics import record_rejected
from worker.publishing import event_log, make_publisher

log = logging.getLogger(__name__)

Conns = Annotated[Connections, Depends(connections)]


class Rejection(BaseModel):
    """One rejected event: its position in the request, its id when it had one, why."""

    index: int
    event_id: str | None
    error: str


MAX_EVENTS_PER_REQUEST = 50_000
"""Events one ``POST /events`` may carry (413 above). The body limit alone would let
10 MiB of ``[0,0,...]`` through, five million items, and the answer names each rejected
one: 80 MB for a million, in one-off timings, made in 9 s. 50,000 is more real events
than the default body limit holds (about 220 bytes each)."""


def _text(value: str) -> str:
    """``value`` as UTF-8 can carry it: a lone surrogate (JSON's ``"\\ud800"`` decodes
    to one) written as its escape, where the answer's encoding would fail on it."""
    try:
        value.encode()
    except UnicodeEncodeError:
        return value.encode("utf-8", "backslashreplace").decode()
    return value


class IngestAnswer(BaseModel):
    """What ``POST /events`` did: the event_ids queued, and each rejection with its reason."""

    accepted: list[str]
    accepted_count: int
    rejected: list[Rejection]


async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise HTTPException(413, detail=f"request body over {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise HTTPException(413, detail=f"request body over {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


class EmptyIsDefault:
    """ASGI middleware: a query parameter sent empty (``?limit=&as_of=``, as the SPEC's
    route templates write ``as_of=``) is left out, so that it means its default on every
    route, as a front end filling a template expects, rather than a 422."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        query = scope.get("query_string") if scope["type"] == "http" else None
        if query:
            pairs = query.split(b"&")
            kept = [p for p in pairs if p.partition(b"=")[2]]
            if len(kept) != len(pairs):
                scope = {**scope, "query_string": b"&".join(kept)}
        await self.app(scope, receive, send)


def _validate(body: bytes) -> tuple[list[Event], list[Any], list[Rejection]]:
    """The events of a request body, the JSON objects they came from, and the
    rejections; run in the thread pool, as decoding megabytes would hold up every other
    request on the event loop (a concurrent read took 3.4 s instead of 0.1 in one
    timing)."""
    try:
        payload = loads(body)
    except (ValueError, RecursionError) as exc:
        raise HTTPException(422, detail=_text(f"body is not valid JSON: {exc}")) from None
    items = payload if isinstance(payload, list) else [payload]
    if len(items) > MAX_EVENTS_PER_REQUEST:
        raise HTTPException(
            413,
            detail=f"{len(items):,} events in one request: at most "
            f"{MAX_EVENTS_PER_REQUEST:,}; send them in several",
        )
    events: list[Event] = []
    bodies: list[Any] = []
    rejected: list[Rejection] = []
    for index, obj in enumerate(items):
        try:
            events.append(parse_event(obj, None))
            bodies.append(obj)
        except EventError as exc:
            event_id = obj.get("event_id") if isinstance(obj, dict) else None
            rejected.append(
                Rejection(
                    index=index,
                    event_id=_text(event_id) if isinstance(event_id, str) else None,
                    error=_text(exc.reason),
                )
            )
    return events, bodies, rejected


class HeadAsGet:
    """ASGI middleware: ``HEAD`` answers as ``GET`` does, without the body (RFC 9110
    section 9.3.2; FastAPI routes a GET route's HEAD to 405), and a 405 whose ``Allow``
    names GET names HEAD too."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if scope["method"] != "HEAD":

            async def allow_head(message: Any) -> None:
                if message["type"] == "http.response.start" and message["status"] == 405:
                    message = {**message, "headers": _allow_with_head(message["headers"])}
                await send(message)

            await self.app(scope, receive, allow_head)
            return

        async def headers_only(message: Any) -> None:
            if message["type"] == "http.response.body":
                message = {**message, "body": b""}
            await send(message)

        await self.app({**scope, "method": "GET"}, receive, headers_only)


def _allow_with_head(headers: Any) -> list[tuple[bytes, bytes]]:
    """``headers`` with HEAD added to an ``Allow`` that names GET (HeadAsGet serves it)."""
    out = []
    for name, value in headers:
        if name.lower() == b"allow":
            methods = [m.strip() for m in value.split(b",")]
            if b"GET" in methods and b"HEAD" not in methods:
                value = b", ".join([*methods, b"HEAD"])
        out.append((name, value))
    return out


REFUSED_WRITES = (redis.exceptions.OutOfMemoryError, redis.exceptions.ReadOnlyError)
"""Redis' refusals of a write that pass once it has memory again, or is a primary."""


def _publish(conns: Connections, events: list[Event], bodies: list[Any]) -> None:
    make_publisher(conns).publish_validated(zip(events, bodies, strict=True))


def _unavailable(reason: str) -> JSONResponse:
    """503 for a publish that stopped part way: what was logged is applied all the same."""
    detail = (
        f"{reason}; the events of the batches logged before it will still be applied:"
        " send the whole request again (an event published twice is applied once)"
    )
    return JSONResponse({"detail": detail}, status_code=503)


def _event_schemas() -> tuple[dict[str, Any], dict[str, Any]]:
    """The JSON schema of one event (an ``anyOf`` of the event types, by reference), and
    the event types' schemas for the OpenAPI components. A schema cannot say everything
    validation checks (printable ids, real dates, years 1900-2100): a body it allows
    can still be rejected, with the reason in the answer."""
    adapter: TypeAdapter[Event] = TypeAdapter(Event)
    schema = adapter.json_schema(ref_template="#/components/schemas/{model}")
    models: dict[str, Any] = schema.pop("$defs")
    for model in models.values():
        model["properties"]["occurred_at"] = {
            "type": "string",
            "format": "date-time",
            "description": "RFC 3339 with an offset; up to nine fraction digits",
        }
    return schema, models


_EVENT, EVENT_MODELS = _event_schemas()
EVENTS_BODY: dict[str, Any] = {
    "required": True,
    "description": "one event, or an array of them, as SPEC section 1 defines them",
    "content": {
        "application/json": {"schema": {"anyOf": [{"type": "array", "items": _EVENT}, _EVENT]}}
    },
}
"""``POST /events`` reads its body itself (to bound its size while it arrives), so its
schema is written here; :data:`EVENT_MODELS` go into the components."""


class Health(BaseModel):
    """``GET /health``: ok, or degraded with what cannot be reached (503)."""

    status: str
    redis: bool
    database: bool


def create_app(conns: Connections) -> FastAPI:
    """The app, serving the state behind ``conns``."""
    app = FastAPI(
        title="statsworker",
        description="Setlist and creator statistics read from precomputed state.",
        version="0.1.0",
    )
    app.state.conns = conns
    make_schema = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            make_schema()["components"]["schemas"].update(EVENT_MODELS)
        return app.openapi_schema  # type: ignore[return-value]  # set by make_schema

    app.openapi = openapi  # type: ignore[method-assign]
    app.add_middleware(EmptyIsDefault)
    app.add_middleware(HeadAsGet)
    app.include_router(setlist_routes.router)
    app.include_router(video_routes.router)

    @app.exception_handler(StateNeedsRebuild)
    async def state_needs_rebuild(_request: Request, exc: StateNeedsRebuild) -> JSONResponse:
        """State an earlier version wrote is not read: say what fixes it."""
        return JSONResponse({"detail": str(exc)}, status_code=503)

    @app.exception_handler(redis.ConnectionError)
    @app.exception_handler(redis.TimeoutError)
    async def redis_unreachable(_request: Request, exc: redis.RedisError) -> JSONResponse:
        """Redis down or too slow: a clear answer to retry on, not a bare 500."""
        log.warning("Redis unreachable: %s", exc)
        return JSONResponse({"detail": f"Redis is unreachable: {exc}"}, status_code=503)

    @app.exception_handler(redis.exceptions.OutOfMemoryError)
    @app.exception_handler(redis.exceptions.ReadOnlyError)
    async def redis_refuses_writes(_request: Request, exc: redis.RedisError) -> JSONResponse:
        """Redis out of memory, or a replica: as passing as an outage."""
        log.warning("Redis refuses writes: %s", exc)
        return JSONResponse({"detail": f"Redis refuses writes: {exc}"}, status_code=503)

    @app.post(
        "/events",
        response_model=IngestAnswer,
        status_code=202,
        responses={
            401: error("STATSWORKER_INGEST_TOKEN is set and the bearer token is not it"),
            413: error("a body over the size limit, or more than 50,000 events"),
            415: error("a Content-Encoding (gzip, say): the body must be plain JSON"),
            422: or_detail(
                "#/components/schemas/IngestAnswer",
                "every event was rejected (each with its reason), or the body is not JSON",
            ),
            503: error("the event log or Redis is unavailable: send the request again"),
        },
        openapi_extra={"requestBody": EVENTS_BODY},
    )
    async def post_events(
        request: Request,
        authorization: Annotated[str | None, Header()] = None,
    ) -> Any:
        """Validate events (an array or one object) and enqueue the valid ones."""
        token = conns.settings.ingest_token
        if token:
            scheme, _, given = (authorization or "").partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(
                given.strip().encode(), token.encode()
            ):
                raise HTTPException(
                    401,
                    detail="a valid bearer token is required",
                    headers={"WWW-Authenticate": "Bearer"},
                )
        encoding = ", ".join(request.headers.getlist("content-encoding"))
        codings = [c.strip().lower() for c in encoding.split(",")]
        if any(coding not in ("", "identity") for coding in codings):
            raise HTTPException(
                415,
                detail=f"Content-Encoding {encoding.strip()!r} is not supported: send plain JSON",
            )
        body = await _read_body(request, conns.settings.max_body_bytes)
        events, bodies, rejected = await run_in_threadpool(_validate, body)
        if events:
            try:
                await run_in_threadpool(_publish, conns, events, bodies)
            except (redis.ConnectionError, redis.TimeoutError) as exc:
                # The batches logged before it are queued by the workers' sweep.
                log.warning("POST /events: Redis unreachable: %s", exc)
                return _unavailable(f"Redis is unreachable: {exc}")
            except REFUSED_WRITES as exc:  # out of memory, a replica: the same
                log.warning("POST /events: Redis refuses writes: %s", exc)
                return _unavailable(f"Redis refuses writes: {exc}")
            except LOG_ERRORS as exc:
                if not log_unusable(exc):
                    raise  # IntegrityError, ProgrammingError...: a bug, not an outage
                # The server's words (hosts, users) are the operator's, in the log.
                log.warning("POST /events: the event log is unavailable: %s", exc)
                return _unavailable("the event log is unavailable")
        if rejected:
            try:
                await run_in_threadpool(
                    record_rejected, conns.state, conns.settings.key_prefix, len(rejected)
                )
            except (redis.ConnectionError, redis.TimeoutError, *REFUSED_WRITES) as exc:
                # The counter is the operator's; the reasons are the caller's, and they
                # hold whether Redis is up or not.
                log.warning("POST /events: rejections not counted, Redis unreachable: %s", exc)
        answer = IngestAnswer(
            accepted=[e.event_id for e in events], accepted_count=len(events), rejected=rejected
        )
        status = 202 if events or not rejected else 422
        return JSONResponse(answer.model_dump(), status_code=status)

    # The health checks' own threads: the thread pool that runs reads can be full of
    # reads waiting on a hung Redis, and a check queued behind them answered nothing
    # within any healthcheck's timeout (45 reads at once against a stopped Redis).
    health_threads = ThreadPoolExecutor(
        max_workers=2 * PROBE_CONNECTIONS, thread_name_prefix="statsworker-health"
    )

    @app.get("/health", response_model=Health, responses={503: {"model": Health}})
    async def health(conns: Conns) -> JSONResponse:
        """Liveness, with Redis (and event log) reachability."""
        return await asyncio.get_running_loop().run_in_executor(health_threads, _health, conns)

    def _health(conns: Connections) -> JSONResponse:
        checks: dict[str, Any] = {}
        try:
            checks["redis"] = bool(conns.probe().ping())
        except Exception as exc:  # any failure means unreachable
            log.warning("health: redis unreachable: %s", exc)
            checks["redis"] = False
        try:
            event_log(conns).max_seq()  # one indexed query: reachable, and the schema is there
            checks["database"] = True
        except Exception as exc:  # unreachable, refused, or a schema behind
            log.warning("health: the event log cannot be used: %s", exc)
            checks["database"] = False
        ok = all(checks.values())
        return JSONResponse(
            {"status": "ok" if ok else "degraded", **checks}, status_code=200 if ok else 503
        )

    @app.get("/metrics", response_class=PlainTextResponse, responses={503: {"model": Detail}})
    def metrics(conns: Conns) -> Response:
        """Prometheus text exposition."""
        body, content_type = render_metrics(conns)
        return Response(content=body, media_type=content_type)

    return app
