"""The HTTP API: the engine's functions, executions, triggers, events and services over ASGI.

``create_app`` builds a FastAPI app around a running ``Engine``. Every route but ``/health``
needs an API key (``ApiKeyMiddleware``); bodies are capped (``BodyLimitMiddleware``). Errors
are ``{"detail": "one line"}`` with 400 (bad input), 404 (no such thing), 413, 422 (a body that
does not fit its schema, naming the field) or 503 (the engine is stopping).

Pickle: a body sent as ``application/x-python-pickle`` is a pickled ``(args, kwargs)`` and goes
to the replica as it is (the daemon never unpickles what a client sends); a request that
accepts pickle gets the pickled result as the replica made it. JSON works everywhere else.
"""

from __future__ import annotations

import io
import math
import pickle
from collections.abc import AsyncIterator, Callable, Coroutine
from datetime import datetime
from typing import Annotated, Any

import anyio
import orjson
from fastapi import APIRouter, FastAPI, HTTPException, Query, Request, Security
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from fastapi.routing import APIRoute
from fastapi.security import APIKeyHeader
from pydantic import BaseModel, ValidationError
from starlette.types import ASGIApp, Receive, Scope, Send

from .. import _json
from ..engine.core import EngineCore
from ..engine.events import Subscription
from ..engine.replica.protocol import PickledArgument
from ..engine.replica.views import JSON, WHOLE_LIMIT
from ..errors import (
    ConfigurationError,
    DefinitionError,
    EngineClosedError,
    ExecutionNotFoundError,
    InvalidInputError,
    PackageNotFoundError,
    TriggerfishError,
    UnknownFunctionError,
)
from ..models import (
    Deployment,
    ErrorInfo,
    Execution,
    ExecutionRecord,
    ExecutionStatus,
    FunctionSpec,
    LogEntry,
    PackageRevision,
    ServiceStatus,
    StatusChange,
    Trigger,
)
from ..sdk.base import pack_input
from ..sdk.entry import Engine
from ..sdk.packages import Packages
from .auth import KeyRing
from .config import RuntimeDefaults
from .middleware import ApiKeyMiddleware, BodyLimitMiddleware
from .schemas import (
    PICKLE,
    BatchInput,
    CallInput,
    EventIn,
    ExecutionIds,
    ExecutionList,
    ExecutionView,
    FunctionInfo,
    Logs,
    Outcome,
    Problem,
    RerunRequest,
)
from .views import (
    Reply,
    execution_json,
    execution_list_json,
    json_response,
    outcome,
    shown_result,
)

__all__ = ["create_app"]

#: How deep a JSON request body may nest: the route's own wrapper (``{"args": [...]}``, an
#: event's ``{"body": ...}``) and the value it carries, which is held to ``_json.MAX_DEPTH``.
REQUEST_DEPTH = _json.MAX_DEPTH + 2
#: Longest a request may wait for a result; a client waits longer by asking again.
MAX_WAIT = 300.0
_FINISHED = frozenset(
    {
        ExecutionStatus.SUCCEEDED,
        ExecutionStatus.FAILED,
        ExecutionStatus.TIMED_OUT,
        ExecutionStatus.CANCELLED,
    }
)
_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": Problem} for code in (400, 401, 404, 413, 422, 503)
}
_CALL_BODY = {
    "requestBody": {
        "content": {
            "application/json": {"schema": CallInput.model_json_schema()},
            PICKLE: {"schema": {"type": "string", "format": "binary"}},
        }
    }
}
_BATCH_BODY = {
    "requestBody": {
        "content": {
            "application/json": {"schema": BatchInput.model_json_schema()},
            PICKLE: {"schema": {"type": "string", "format": "binary"}},
        }
    }
}

Wait = Annotated[float, Query(ge=0, le=MAX_WAIT, description="seconds to wait for the result")]


class _RefusedBody(HTTPException):
    """A JSON body the boundary refuses: raised from ``Request.json`` as an HTTPException, the
    one kind FastAPI lets through its body parsing (anything else becomes "There was an error
    parsing the body", which says nothing)."""

    def __init__(self, error: InvalidInputError) -> None:
        super().__init__(400, str(error))


class _StrictRequest(Request):
    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            try:
                self._json = _json.parse(await self.body(), max_depth=REQUEST_DEPTH)
            except InvalidInputError as exc:
                raise _RefusedBody(exc) from None
        return self._json


class StrictJSONRoute(APIRoute):
    """A route whose JSON body is read by ``_json.parse``: at most 64 levels deep, valid
    unicode, finite numbers and exact big integers, each refusal naming the field."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def strict(request: Request) -> Response:
            return await handler(_StrictRequest(request.scope, request.receive))

        return strict


async def call(
    core: EngineCore, name: str, blobs: list[bytes], timeout: float, accept: str
) -> Reply:
    """Start one execution and wait up to ``timeout`` seconds for its outcome."""
    core.spec_of(name)
    ((execution_id, waiter),) = await core.submit_watched(name, blobs)
    with anyio.move_on_after(timeout):
        return await outcome(await core.wait_for(waiter), accept)
    return await outcome(await core.record(execution_id), accept)


async def call_inputs(request: Request, batch: bool) -> list[bytes]:
    """The pickled inputs a start request carries, JSON or pickle."""
    body = await request.body()
    if request.headers.get("content-type", "").startswith(PICKLE):
        if not batch:
            return [body]
        try:
            blobs = _ListOfBytes.read(body)
        except Exception:
            raise ConfigurationError(
                "a pickled batch must be a pickled list of pickled (args, kwargs)"
            ) from None
        return blobs
    value = _json.parse(body or b"{}", max_depth=REQUEST_DEPTH)
    if not isinstance(value, dict):
        shape = '{"inputs": [...]}' if batch else '{"args": [...], "kwargs": {...}}'
        problem = {"loc": ("body",), "msg": f"must be a JSON object, {shape}", "type": "dict"}
        raise RequestValidationError([problem])
    try:
        if batch:
            calls = BatchInput.model_validate(value).inputs
        else:
            calls = [CallInput.model_validate(value)]
    except ValidationError as exc:
        raise RequestValidationError(exc.errors()) from None
    return [pack_input("call", tuple(c.args), c.kwargs) for c in calls]


class _ListOfBytes(pickle.Unpickler):
    """Unpickles a list of bytes and nothing else: no class or function can be named."""

    def find_class(self, module: str, name: str) -> Any:
        raise pickle.UnpicklingError(f"{module}.{name} is not allowed here")

    @classmethod
    def read(cls, data: bytes) -> list[bytes]:
        value = cls(io.BytesIO(data)).load()
        if not isinstance(value, list) or not all(isinstance(v, bytes) for v in value):
            raise pickle.UnpicklingError("not a list of bytes")
        if not value:
            raise pickle.UnpicklingError("empty")
        return value


class CallFastLane:
    """``POST /functions/{name}/call`` with a pickled body, answered before FastAPI's routing
    and parameter machinery, which cost more than the call itself (about 1 ms a request here).
    It runs the same ``call`` as the documented route; a JSON body, or a query it does not
    read as a plain ``timeout``, goes on to that route."""

    def __init__(self, app: ASGIApp, core: EngineCore) -> None:
        self.app = app
        self.core = core

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope.get("path", "")
        if (
            scope["type"] == "http"
            and scope["method"] == "POST"
            and path.startswith("/functions/")
            and path.endswith("/call")
        ):
            name = path[len("/functions/") : -len("/call")]
            headers = dict(scope["headers"])
            timeout = _plain_timeout(scope.get("query_string", b""))
            pickled = headers.get(b"content-type", b"").startswith(PICKLE.encode())
            if name and "/" not in name and pickled and timeout is not None:
                chunks = []
                while True:
                    message = await receive()
                    chunks.append(message.get("body", b""))
                    if not message.get("more_body"):
                        break
                accept = headers.get(b"accept", b"").decode("latin-1")
                try:
                    reply = await call(self.core, name, [b"".join(chunks)], timeout, accept)
                except TriggerfishError as exc:
                    problem = {"detail": str(exc), "error": type(exc).__name__}
                    body = _json.dumps(problem).encode()
                    reply = Reply(_status_for(exc), {"Content-Type": "application/json"}, body)
                await send(
                    {
                        "type": "http.response.start",
                        "status": reply.status,
                        "headers": [
                            (b"content-length", str(len(reply.body)).encode()),
                            *((k.lower().encode(), v.encode()) for k, v in reply.headers.items()),
                        ],
                    }
                )
                await send({"type": "http.response.body", "body": reply.body})
                return
        await self.app(scope, receive, send)


def _plain_timeout(query: bytes) -> float | None:
    """The ``timeout`` of a query that holds nothing else (60 when absent), or None."""
    if not query:
        return 60.0
    key, _, value = query.decode("latin-1").partition("=")
    try:
        timeout = float(value)
    except ValueError:
        return None
    return timeout if key == "timeout" and "&" not in value and 0 <= timeout <= MAX_WAIT else None


def _problem(status: int, detail: str, error: str | None = None) -> JSONResponse:
    body = {"detail": detail} if error is None else {"detail": detail, "error": error}
    return JSONResponse(body, status)


def _status_for(exc: TriggerfishError) -> int:
    if isinstance(exc, LookupError):  # no such function, execution, trigger or package
        return 404
    if isinstance(exc, EngineClosedError):
        return 503
    return 400


def _one_line(errors: Any) -> str:
    parts = []
    for error in list(errors)[:3]:
        where = ".".join(str(p) for p in error.get("loc", ()))
        parts.append(f"{where}: {error.get('msg', 'invalid')}" if where else error.get("msg"))
    return "; ".join(parts) or "invalid request"


def create_app(
    engine: Engine,
    keys: KeyRing,
    *,
    max_body_bytes: int,
    runtime_defaults: RuntimeDefaults | None = None,
) -> FastAPI:
    """The ASGI app serving ``engine`` (which must be running while the app serves).
    ``runtime_defaults`` fill in the runtime of a service JSON that leaves it out."""
    core: EngineCore = engine.core
    key_header = APIKeyHeader(name="X-API-Key", auto_error=False, description="an API key")
    app = FastAPI(
        title="triggerfish",
        summary="Functions as a service: executions, triggers, events",
        version="0.1.0",
        dependencies=[Security(key_header)],  # documents the key; the middleware enforces it
        responses=_ERRORS,
    )
    app.add_middleware(CallFastLane, core=core)
    app.add_middleware(BodyLimitMiddleware, limit=max_body_bytes)
    app.add_middleware(ApiKeyMiddleware, keys=keys)  # outermost: nothing runs before it

    @app.exception_handler(TriggerfishError)
    async def _triggerfish_error(request: Request, exc: TriggerfishError) -> JSONResponse:
        return _problem(_status_for(exc), str(exc), type(exc).__name__)

    @app.exception_handler(_RefusedBody)
    async def _refused(request: Request, exc: _RefusedBody) -> JSONResponse:
        return _problem(400, str(exc.detail), InvalidInputError.__name__)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        return _problem(422, _one_line(exc.errors()))

    @app.get("/health", tags=["daemon"])
    async def health() -> dict[str, str]:
        """Whether the daemon is up. The one route that needs no key."""
        return {"status": "ok" if core.running else "stopping"}

    app.include_router(_functions(engine, core))
    app.include_router(_executions(engine, core))
    app.include_router(_triggers(engine))
    app.include_router(_events_and_services(engine, core))
    app.include_router(_applications(core))
    app.include_router(_packages(engine))
    app.include_router(_deployments(engine, runtime_defaults or RuntimeDefaults()))
    return app


def _function_info(core: EngineCore, name: str) -> FunctionInfo:
    spec = core.spec_of(name)
    return FunctionInfo(
        name=spec.name,
        service=spec.service,
        description=spec.description,
        timeout=spec.timeout,
        max_attempts=spec.max_attempts,
        max_concurrency=spec.max_concurrency,
        input_serializer=spec.input_serializer,
        output_serializer=spec.output_serializer,
        application=getattr(spec, "application", False),
    )


def _functions(engine: Engine, core: EngineCore) -> APIRouter:
    router = APIRouter(prefix="/functions", tags=["functions"], route_class=StrictJSONRoute)

    @router.get("")
    async def list_functions() -> list[FunctionInfo]:
        return [_function_info(core, name) for name in engine.function_names]

    @router.get("/{name}")
    async def get_function(name: str) -> FunctionInfo:
        return _function_info(core, name)

    @router.get("/{name}/statistics")
    async def statistics(name: str) -> dict[ExecutionStatus, int]:
        """How many executions of the function are in each status."""
        return await engine.handle(name).statistics()

    @router.post("/{name}/executions", status_code=201, openapi_extra=_CALL_BODY)
    async def start(name: str, request: Request) -> ExecutionIds:
        """Start an execution: JSON ``{"args": [...], "kwargs": {...}}`` or a pickled
        ``(args, kwargs)``. Returns once it is stored."""
        core.spec_of(name)
        return ExecutionIds(
            execution_ids=await core.submit(name, await call_inputs(request, False))
        )

    @router.post("/{name}/executions/batch", status_code=201, openapi_extra=_BATCH_BODY)
    async def start_many(name: str, request: Request) -> ExecutionIds:
        """Start many executions in one commit: ``{"inputs": [{"args": ...}, ...]}`` or a
        pickled list of pickled ``(args, kwargs)``. Ids in input order."""
        core.spec_of(name)
        return ExecutionIds(execution_ids=await core.submit(name, await call_inputs(request, True)))

    @router.post(
        "/{name}/call",
        openapi_extra=_CALL_BODY,
        response_model=Outcome,
        responses={202: {"model": Outcome, "description": "not finished within the wait"}},
    )
    async def call_function(name: str, request: Request, timeout: Wait = 60.0) -> Response:
        """Start an execution and wait for its result (up to ``timeout`` seconds; after that,
        202 with its id, to ask ``/executions/{id}/result`` again)."""
        blobs = await call_inputs(request, False)
        accept = request.headers.get("accept", "")
        return (await call(core, name, blobs, timeout, accept)).response()

    @router.post("/{name}/rerun")
    async def rerun(name: str, body: RerunRequest | None = None) -> ExecutionIds:
        """Run the function's FAILED and TIMED_OUT executions again (all, or those given)."""
        ids = body.execution_ids if body is not None else None
        return ExecutionIds(execution_ids=await engine.handle(name).rerun(ids))

    return router


def _executions(engine: Engine, core: EngineCore) -> APIRouter:
    router = APIRouter(prefix="/executions", tags=["executions"], route_class=StrictJSONRoute)

    @router.get("", response_model=ExecutionList)
    async def list_executions(
        function: str | None = None,
        status: Annotated[list[ExecutionStatus] | None, Query()] = None,
        trigger: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        offset: Annotated[str | None, Query(max_length=200)] = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 50,
    ) -> Response:
        """Executions newest first, by function, status, trigger (id or name) and creation
        time (ISO 8601 with a zone); ``offset`` from the previous page for the next."""
        for name, moment in (("since", since), ("until", until)):
            if moment is not None and moment.tzinfo is None:
                raise ConfigurationError(f"{name} must carry a time zone (e.g. ...Z)")
        page = await engine.list_executions(
            function=function,
            status=status,
            trigger=trigger,
            since=since,
            until=until,
            offset=offset,
            limit=limit,
        )
        records = [await core.record(i) for i in page.execution_ids]
        return json_response(await execution_list_json(records, page.offset))

    @router.get("/{execution_id}", response_model=ExecutionView)
    async def get_execution(execution_id: str) -> Response:
        """An execution; its result shown as JSON up to 1 MiB (``result_encoding`` says how)."""
        return json_response(await execution_json(await core.record(execution_id)))

    @router.get(
        "/{execution_id}/result",
        response_model=Outcome,
        responses={202: {"model": Outcome, "description": "not finished within the wait"}},
    )
    async def result(execution_id: str, request: Request, timeout: Wait = 0.0) -> Response:
        """The result once finished, waiting up to ``timeout`` seconds; 202 if not yet."""
        try:
            record = await core.wait(execution_id, timeout)
        except TimeoutError:
            record = await core.record(execution_id)
        return (await outcome(record, request.headers.get("accept", ""))).response()

    @router.post("/{execution_id}/cancel", response_model=ExecutionView)
    async def cancel(execution_id: str) -> Response:
        """Cancel: a queued execution ends CANCELLED at once, a running one is stopped."""
        await core.cancel(execution_id)
        return json_response(await execution_json(await core.record(execution_id)))

    @router.post("/{execution_id}/rerun")
    async def rerun(execution_id: str) -> ExecutionIds:
        """Run a FAILED or TIMED_OUT execution again."""
        record = await core.record(execution_id)
        return ExecutionIds(execution_ids=await core.rerun(record.function, [execution_id]))

    @router.get("/{execution_id}/status-log")
    async def status_log(execution_id: str) -> list[StatusChange]:
        return list(Execution.from_record(await core.record(execution_id)).status_log)

    @router.get(
        "/{execution_id}/logs",
        response_model=Logs,
        responses={200: {"content": {"application/x-ndjson": {}}}},
    )
    async def logs(execution_id: str, follow: bool = False) -> Response:
        """The execution's captured stdout, stderr and logging. With ``follow``, a stream of
        JSON lines (one log entry each) that ends when the execution finishes."""
        record = await core.record(execution_id)
        if not follow:
            return Response(
                Logs(logs=list(Execution.from_record(record).logs)).model_dump_json(),
                media_type="application/json",
            )
        return StreamingResponse(_follow(core, execution_id), media_type="application/x-ndjson")

    return router


async def _follow(core: EngineCore, execution_id: str) -> AsyncIterator[bytes]:
    """The execution's log lines, then each new one as its events tell of it, until it
    finishes. Subscribed before the first read, so that no line falls in between; each event
    (or a lag) sends what the record holds past what was sent."""
    # ExecutionFinished too: on a shared store, the final row of an execution another engine
    # ran may be read only once it is committed, which that event tells.
    kinds = ("ExecutionLogged", "ExecutionStatusChanged", "ExecutionFinished")
    sent = 0
    with core.hub.subscribe(kinds, execution_id=execution_id, buffer=100) as events:
        while True:
            record = await core.record(execution_id)
            for at, stream, text in record.logs[sent:]:
                entry = LogEntry.model_validate({"time": at, "stream": stream, "text": text})
                yield entry.model_dump_json().encode() + b"\n"
            sent = len(record.logs)
            if record.terminated or events.closed:
                return
            try:
                await events.__anext__()
            except StopAsyncIteration:  # the engine stopped
                return


def _triggers(engine: Engine) -> APIRouter:
    router = APIRouter(prefix="/triggers", tags=["triggers"], route_class=StrictJSONRoute)
    triggers = engine.triggers

    @router.get("")
    async def list_triggers() -> list[Trigger]:
        """Every trigger with its statistics (fired, suppressed with the last reason, missed)."""
        await engine.core.count_firings()
        return triggers.list()

    @router.post("", status_code=201)
    async def create_trigger(definition: dict[str, Any], replace: bool = False) -> Trigger:
        """A trigger from Dataloop's trigger JSON (event or cron). With ``replace``, one of the
        same name is updated to this definition instead of refused."""
        if replace:
            return await triggers.apply(definition)
        return await triggers.create(definition)

    @router.get("/export")
    async def export_triggers() -> list[dict[str, Any]]:
        """Every trigger as Dataloop's JSON (the nested form its SDK posts): what
        ``POST /triggers?replace=true`` (or ``triggerfish triggers apply``) reads back as the
        same triggers. (A trigger named "export" is read by its id.)"""
        return triggers.export()

    @router.get("/{trigger}")
    async def get_trigger(trigger: str) -> Trigger:
        """A trigger by id or name."""
        await engine.core.count_firings()
        return triggers.get(trigger)

    @router.patch("/{trigger}")
    async def update_trigger(trigger: str, changes: dict[str, Any]) -> Trigger:
        """Change some fields of a trigger's spec (``{"filter": ...}``, ``{"cron": ...}``)."""
        return await triggers.update(trigger, **changes)

    @router.post("/{trigger}/activate")
    async def activate(trigger: str) -> Trigger:
        return await triggers.activate(trigger)

    @router.post("/{trigger}/deactivate")
    async def deactivate(trigger: str) -> Trigger:
        return await triggers.deactivate(trigger)

    @router.delete("/{trigger}", status_code=204)
    async def delete_trigger(trigger: str) -> Response:
        await triggers.delete(trigger)
        return Response(status_code=204)

    return router


def _events_and_services(engine: Engine, core: EngineCore) -> APIRouter:
    router = APIRouter(route_class=StrictJSONRoute)

    @router.post("/events", tags=["events"])
    async def emit(event: EventIn) -> ExecutionIds:
        """Publish an event; returns once the executions it caused are stored."""
        ids = await engine.emit(event.resource, event.action, event.body, event.resource_id)
        return ExecutionIds(execution_ids=ids)

    @router.get(
        "/events/stream",
        tags=["events"],
        response_class=StreamingResponse,
        responses={200: {"content": {"text/event-stream": {}}}},
    )
    async def stream(
        kind: Annotated[list[str] | None, Query(description="event kinds; all if none")] = None,
        function: str | None = None,
        execution_id: str | None = None,
        timeout: Annotated[float | None, Query(ge=0, description="end after this long")] = None,
    ) -> StreamingResponse:
        """The engine's events as they happen, as server-sent events (``event:`` its kind,
        ``data:`` its JSON): every kind or those named, of one function (and its revisions)
        or one execution. A reader that falls behind gets a ``SubscriberLagged`` event with
        how many it missed; the stream never slows the engine. It ends after ``timeout``
        seconds, or when the daemon stops; a comment line every 15 s keeps it open."""
        try:
            events = core.hub.subscribe(kind, function=function, execution_id=execution_id)
        except ValueError as exc:
            raise ConfigurationError(str(exc)) from None
        stream = _server_sent(events, math.inf if timeout is None else timeout)
        return StreamingResponse(stream, media_type="text/event-stream")

    return router


#: Seconds between two keep-alive comments of an event stream with nothing to tell.
KEEPALIVE = 15.0


async def _server_sent(events: Subscription, seconds: float) -> AsyncIterator[bytes]:
    end = anyio.current_time() + seconds
    with events:
        yield b": triggerfish events\n\n"  # sent at once: the reader knows it is subscribed
        while (left := end - anyio.current_time()) > 0:
            with anyio.move_on_after(min(KEEPALIVE, left)) as quiet:
                try:
                    event = await events.__anext__()
                except StopAsyncIteration:
                    return
            if quiet.cancelled_caught:
                yield b": keep-alive\n\n"
                continue
            data = _json.dumps(event.to_json())
            yield f"event: {event.kind}\ndata: {data}\n\n".encode()


class RequestAccepted(BaseModel):
    """An application request that has not finished (yet): ask again with its id."""

    request_id: str
    status: ExecutionStatus


def _application(core: EngineCore, name: str) -> FunctionSpec:
    spec = core.functions.get(name)
    if spec is None or not spec.application:
        known = ", ".join(sorted(n for n, s in core.functions.items() if s.application)) or "none"
        raise UnknownFunctionError(f"no application named {name!r} (applications: {known})")
    return spec


async def _application_reply(spec: FunctionSpec, record: ExecutionRecord) -> Response:
    """200 with the output, 202 while it runs, 502 if the function did not succeed."""
    headers = {"X-Request-Id": record.id, "X-Execution-Status": record.status.value}
    if record.status not in _FINISHED:
        accepted = RequestAccepted(request_id=record.id, status=record.status)
        return Response(accepted.model_dump_json(), 202, headers, "application/json")
    if record.status is ExecutionStatus.SUCCEEDED:
        if spec.output_serializer == "pickle":
            return Response(record.result or pickle.dumps(None), 200, headers, PICKLE)
        # Its replica made the whole output's JSON (an application's view is not cut).
        shown = await shown_result(record, WHOLE_LIMIT)
        if shown.encoding == JSON:
            return Response(orjson.dumps(shown.value), 200, headers, "application/json")
        error = ErrorInfo(
            type="SerializationError", message=f"the output is not JSON: {shown.value}"
        )
    else:
        shown_error = Execution.from_record(record).error
        error = shown_error or ErrorInfo(type="Error", message=record.status.value)
    failed = Outcome(id=record.id, status=record.status, finished=True, error=error)
    return Response(failed.model_dump_json(), 502, headers, "application/json")


def _applications(core: EngineCore) -> APIRouter:
    router = APIRouter(prefix="/applications", tags=["applications"], route_class=StrictJSONRoute)
    replies: dict[int | str, dict[str, Any]] = {
        200: {"description": "the output, serialized by the output serializer"},
        202: {"model": RequestAccepted, "description": "not finished: ask again by its id"},
        502: {"model": Outcome, "description": "the function failed, timed out or was cancelled"},
    }
    body_doc = {
        "requestBody": {
            "content": {
                "application/json": {"schema": {}},
                PICKLE: {"schema": {"type": "string", "format": "binary"}},
            }
        }
    }

    @router.post("/{name}", responses=replies, openapi_extra=body_doc)
    async def run_application(
        name: str, request: Request, wait: bool = True, timeout: Wait = 60.0
    ) -> Response:
        """Run an application with the request body as its input (JSON unless the
        application reads pickle). Waits up to ``timeout`` seconds for the output unless
        ``wait`` is false; either way, a request that has not finished answers 202 with its
        id."""
        spec = _application(core, name)
        body = await request.body()
        if spec.input_serializer == "pickle":
            blob = pickle.dumps(((PickledArgument(body),), {}), protocol=pickle.HIGHEST_PROTOCOL)
        else:
            value = _json.parse(body)
            blob = pack_input(name, (value,), {})
        ((execution_id, waiter),) = await core.submit_watched(name, [blob])
        record = None
        if wait:
            with anyio.move_on_after(timeout):
                record = await core.wait_for(waiter)
        return await _application_reply(spec, record or await core.record(execution_id))

    @router.get("/{name}/requests/{request_id}", responses=replies)
    async def application_request(name: str, request_id: str, timeout: Wait = 0.0) -> Response:
        """A request's output, waiting up to ``timeout`` seconds for it."""
        spec = _application(core, name)
        try:
            record = await core.wait(request_id, timeout)
        except TimeoutError:
            record = await core.record(request_id)
        if record.function != name:
            raise ExecutionNotFoundError(f"application {name!r} has no request {request_id!r}")
        return await _application_reply(spec, record)

    return router


ZIP = "application/zip"


def _packages(engine: Engine) -> APIRouter:
    router = APIRouter(prefix="/packages", tags=["packages"], route_class=StrictJSONRoute)
    packages = engine.packages

    async def known(name: str) -> None:
        if name not in {p.name for p in await packages.list()}:
            raise PackageNotFoundError(f"no package named {name!r} was pushed")

    @router.post(
        "",
        status_code=201,
        openapi_extra={
            "requestBody": {
                "content": {ZIP: {"schema": {"type": "string", "format": "binary"}}},
                "required": True,
            }
        },
    )
    async def push(request: Request) -> PackageRevision:
        """Push a codebase, a zip with its ``package.json`` at the root, as the next revision
        of the package that JSON names."""
        body = await request.body()
        if not body:
            raise ConfigurationError("the body must be a zip of the codebase")
        return await packages.push(body)

    @router.get("")
    async def list_packages() -> list[PackageRevision]:
        """The latest revision of every package."""
        return await packages.list()

    @router.get("/{name}")
    async def get_package(name: str) -> PackageRevision:
        await known(name)
        return await packages.get(name)

    @router.put("/{name}", status_code=201)
    async def update_package(name: str, package_json: dict[str, Any]) -> PackageRevision:
        """A new revision with this package JSON and the latest revision's codebase."""
        await known(name)
        return await packages.update(name, package_json)

    @router.get("/{name}/revisions")
    async def revisions(name: str) -> list[PackageRevision]:
        """Every revision, oldest first."""
        await known(name)
        return await packages.revisions(name)

    @router.get("/{name}/revisions/{revision}")
    async def get_revision(name: str, revision: int) -> PackageRevision:
        await known(name)
        return await _revision(packages, name, revision)

    @router.get(
        "/{name}/revisions/{revision}/codebase",
        response_class=Response,
        responses={200: {"content": {ZIP: {}}}},
    )
    async def download(name: str, revision: int) -> Response:
        """The codebase of a revision, as the zip that was pushed."""
        await known(name)
        await _revision(packages, name, revision)
        data = await packages.codebase(name, revision)
        filename = f"{name}-r{revision}.zip"
        headers = {"Content-Disposition": f'attachment; filename="{filename}"'}
        return Response(data, media_type=ZIP, headers=headers)

    return router


async def _revision(packages: Packages, name: str, revision: int) -> PackageRevision:
    try:
        return await packages.get(name, revision)
    except DefinitionError:
        raise PackageNotFoundError(f"package {name!r} has no revision {revision}") from None


def _deployments(engine: Engine, runtime_defaults: RuntimeDefaults) -> APIRouter:
    router = APIRouter(prefix="/services", tags=["services"], route_class=StrictJSONRoute)
    deployments = engine.deployments

    @router.post("", status_code=201)
    async def deploy(definition: dict[str, Any]) -> Deployment:
        """Deploy a service from a package revision (Dataloop's service JSON), or update it:
        each deploy is a new version of the service. A runtime the JSON leaves out comes from
        the daemon's configured defaults."""
        return await deployments.deploy(runtime_defaults.fill(definition))

    @router.get("")
    async def list_services() -> list[ServiceStatus]:
        """Every service: deployed ones by name, and those the daemon's app registered."""
        deployed = [deployments.status(d.name) for d in deployments.list()]
        pinned_pools = {f"{d.name}@" for d in deployments.list()}
        registered = [
            engine.service_status(name)
            for name in sorted(engine.core.services)
            if not any(name.startswith(prefix) for prefix in pinned_pools)
        ]
        return deployed + registered

    @router.get("/export")
    async def export_services() -> list[dict[str, Any]]:
        """The current version of every deployed service as Dataloop's service JSON (its
        package revision pinned): what ``POST /services`` reads back as the same service."""
        return deployments.export()

    @router.get("/{name}")
    async def get_service(name: str) -> ServiceStatus:
        """A service's state (Active, Inactive, Initializing, Error with its error) and load."""
        if name in {d.name for d in deployments.list()}:
            return deployments.status(name)
        return engine.service_status(name)

    @router.get("/{name}/deployment")
    async def get_deployment(name: str) -> Deployment:
        """The current version of a deployed service."""
        return deployments.get(name)

    @router.get("/{name}/versions")
    async def versions(name: str) -> list[Deployment]:
        """Every version of a deployed service, oldest first."""
        deployments.get(name)
        return await deployments.versions(name)

    @router.post("/{name}/pause")
    async def pause(name: str) -> ServiceStatus:
        """Inactive: nothing new starts (executions wait, PENDING); triggers are suppressed."""
        return await deployments.pause(name)

    @router.post("/{name}/resume")
    async def resume(name: str) -> ServiceStatus:
        return await deployments.resume(name)

    return router
