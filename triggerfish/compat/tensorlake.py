"""Tensorlake's applications, functions and classes on triggerfish: code written for
Tensorlake runs with its import changed, nothing else.

    from tensorlake.applications import application, function, cls, RequestContext  # before
    from triggerfish.compat.tensorlake import application, function, cls, RequestContext  # after

``@function(cpu=..., memory=..., ephemeral_disk=..., gpu=..., image=..., secrets=...,
timeout=..., retries=...)`` makes a function that, called inside a running function, runs as
a nested execution in replicas of its own and blocks until its output comes back; called
anywhere else, it runs here, as a plain call. ``@cls()`` makes a class whose ``__init__``
runs once per replica; its ``@function`` methods, called on an instance inside a running
function, run in that class's replicas. ``@application(input_deserializer=...,
output_serializer=...)`` over a ``@function`` makes an entry point:
``run_local_application(app, input)`` runs it on an engine in this process (started the
first time, stopped at exit), ``run_remote_application(name, input)`` (or ``POST
/applications/{name}``) on a daemon that serves it (``triggerfish serve --app
mymodule:app``).
``RequestContext.get()`` gives the request's id, the same in every call of one request, and
``progress.update(current, total)``, which resets the timeout.

Nothing here runs work itself: each call is one call of triggerfish's own handles or of a
running function's context.
"""

from __future__ import annotations

import contextvars
import functools
import importlib
import inspect
import os
import secrets as _random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from ..engine.replica.context import current_context
from ..errors import ConfigurationError
from ..models import FunctionSpec, ServiceSpec
from ..sdk.engine import AsyncEngine
from ..sdk.remote import Client
from ._embedded import Embedded

__all__ = [
    "Request",
    "RequestContext",
    "Retries",
    "application",
    "cls",
    "function",
    "run_local_application",
    "run_remote_application",
    "serve",
]

T = TypeVar("T")
#: The keyword argument that carries a request's id into the nested calls it makes.
_REQUEST = "__tensorlake_request_id__"
_request: contextvars.ContextVar[str] = contextvars.ContextVar("tensorlake_request")


@dataclass(frozen=True)
class Retries:
    """Tensorlake's retry policy: ``max_retries`` attempts after the first, the first one
    ``initial_delay`` seconds after the failure, each later one ``delay_multiplier`` times
    longer, at most ``max_delay``."""

    max_retries: int = 0
    initial_delay: float = 1.0
    max_delay: float = 60.0
    delay_multiplier: float = 2.0

    def options(self) -> dict[str, Any]:
        """As triggerfish's options (whose delays double: a ``delay_multiplier`` is taken
        as 2)."""
        return {
            "max_attempts": self.max_retries + 1,
            "backoff": self.initial_delay,
            "max_backoff": self.max_delay,
        }


class _Progress:
    def update(self, current: float, total: float | None = None) -> None:
        """Progress, as ``current`` of ``total`` (or a percent): it resets the timeout."""
        percent = current if not total else 100.0 * current / total
        current_context().progress.update(max(0, min(100, int(percent))))


@dataclass(frozen=True)
class RequestContext:
    """The request a function runs for: ``request_id`` (one for every call of a request)
    and ``progress``."""

    request_id: str
    progress: _Progress = field(default_factory=_Progress)

    @classmethod
    def get(cls) -> RequestContext:
        request_id = _request.get(None) or current_context().execution_id
        return cls(request_id=request_id or f"local-{_random.token_hex(8)}")


@dataclass
class _Options:
    """A function's Tensorlake attributes, as triggerfish's options."""

    engine: dict[str, Any]
    application: bool = False


def _options(
    description: str,
    cpu: float,
    memory: float,
    ephemeral_disk: float,
    gpu: str | None,
    timeout: float,
    image: Any,
    secrets: list[str] | dict[str, str] | None,
    retries: Retries | None,
) -> dict[str, Any]:
    found: dict[str, Any] = {
        "description": description,
        "cpu": cpu,
        "memory": memory,
        "ephemeral_disk": ephemeral_disk,
        "timeout": timeout,
    }
    if gpu is not None:
        found["gpu"] = gpu
    if image is not None:  # a name, or an Image object that has one
        found["image"] = image if isinstance(image, str) else str(getattr(image, "name", image))
    if secrets:
        names = secrets if isinstance(secrets, list) else list(secrets)
        found["secrets"] = {name: os.environ.get(name, "") for name in names}
    if retries is not None:
        found |= retries.options()
    return found


class _Function:
    """A function decorated with ``@function``: called, it runs here, or, inside a running
    function, as a nested execution (see the module's docstring)."""

    def __init__(self, fn: Callable[..., Any], options: dict[str, Any]) -> None:
        functools.update_wrapper(self, fn)
        self.__wrapped__ = fn
        self.name = fn.__name__
        self.options = _Options(options)
        _FUNCTIONS[self.name] = self

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        context = current_context()
        if context.execution_id is not None:  # inside a running function: its own replicas
            request = RequestContext.get().request_id
            return context.call_remote(self.name, *args, **{_REQUEST: request}, **kwargs)
        with _in_request(None):
            return self.__wrapped__(*args, **kwargs)

    def __reduce__(self) -> tuple[Any, ...]:
        """By name: a function pickled by value (one of ``__main__``) finds it here."""
        return (_by_name, (self.name,))

    #: ``triggerfish serve --app mymodule:greet``: the daemon serves the program's Tensorlake
    #: functions and classes (see ``serve``).
    @staticmethod
    def __triggerfish_app__(engine: AsyncEngine) -> None:
        serve(engine)


def _by_name(name: str) -> _Function:
    return _FUNCTIONS.get(name) or _Remote(name)  # type: ignore[return-value]


class _Remote:
    """A function known by its name alone (in a replica that did not import it)."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        request = RequestContext.get().request_id
        return current_context().call_remote(self.name, *args, **{_REQUEST: request}, **kwargs)


class _in_request:
    """Runs a call within request ``request_id`` (a new local one if None and none runs)."""

    def __init__(self, request_id: str | None) -> None:
        self._request_id = request_id
        self._token: contextvars.Token[str] | None = None

    def __enter__(self) -> None:
        if self._request_id is not None or _request.get(None) is None:
            rid = self._request_id or current_context().execution_id
            self._token = _request.set(rid or f"local-{_random.token_hex(8)}")

    def __exit__(self, *exc_info: object) -> None:
        if self._token is not None:
            _request.reset(self._token)


def _entry(fn: Callable[..., Any], where: tuple[str, str] | None = None) -> Callable[..., Any]:
    """What a replica runs for ``fn``: the request's id taken from the call and set for
    ``RequestContext`` (the execution's own id for the request's first call). ``where``
    (module, name of the ``@function``): the replica imports it there, as it would any
    function of a module (its globals are the module's, not copies); else ``fn`` travels
    by value (a function of ``__main__``)."""
    if where is not None:

        def run(*args: Any, **kwargs: Any) -> Any:
            target = getattr(importlib.import_module(where[0]), where[1])
            with _in_request(kwargs.pop(_REQUEST, None)):
                return target.__wrapped__(*args, **kwargs)

    else:

        def run(*args: Any, **kwargs: Any) -> Any:
            with _in_request(kwargs.pop(_REQUEST, None)):
                return fn(*args, **kwargs)

    run.__name__ = run.__qualname__ = getattr(fn, "__name__", "function")
    return run


def _method_entry(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``_entry`` for a method: the class travels by reference or value, and this with it."""

    def run(self: Any, *args: Any, **kwargs: Any) -> Any:
        with _in_request(kwargs.pop(_REQUEST, None)):
            return fn(self, *args, **kwargs)

    return run


def function(
    description: str = "",
    cpu: float = 1.0,
    memory: float = 1.0,
    ephemeral_disk: float = 2.0,
    gpu: str | None = None,
    timeout: float = 300,
    image: Any = None,
    secrets: list[str] | dict[str, str] | None = None,
    retries: Retries | None = None,
    region: str | None = None,
) -> Callable[[Callable[..., Any]], _Function]:
    """Tensorlake's ``@function``; ``region`` is accepted and names nothing here."""
    options = _options(
        description, cpu, memory, ephemeral_disk, gpu, timeout, image, secrets, retries
    )

    def decorate(fn: Callable[..., Any]) -> _Function:
        return _Function(fn, options)

    return decorate


def application(
    tags: dict[str, str] | None = None,
    retries: Retries | None = None,
    region: str | None = None,
    input_deserializer: str = "json",
    output_serializer: str = "json",
) -> Callable[[_Function], _Function]:
    """Tensorlake's ``@application``, over a ``@function``: an entry point whose one argument
    is the request's input (read by ``input_deserializer``), its output written by
    ``output_serializer`` ("json" or "pickle"). ``tags`` and ``region`` name nothing here."""

    def decorate(target: _Function) -> _Function:
        if not isinstance(target, _Function):
            raise ConfigurationError("@application goes over a @function")
        target.options.application = True
        engine = target.options.engine
        engine |= {"input_serializer": input_deserializer, "output_serializer": output_serializer}
        if retries is not None and "max_attempts" not in engine:
            engine |= retries.options()
        return target

    return decorate


_CLASSES: dict[str, type] = {}
_FUNCTIONS: dict[str, _Function] = {}


class _Method:
    """A ``@function`` method of a ``@cls`` class: called on an instance inside a running
    function, it runs in the class's replicas; anywhere else, here."""

    def __init__(self, function: _Function, owner: str, attribute: str) -> None:
        self.fn = function.__wrapped__
        self.options = function.options.engine
        self.name = f"{owner}.{attribute}"

    def __get__(self, instance: Any, owner: type | None = None) -> Callable[..., Any]:
        if instance is None:
            return self.fn
        local = self.fn.__get__(instance, owner)

        @functools.wraps(local)
        def call(*args: Any, **kwargs: Any) -> Any:
            context = current_context()
            if context.execution_id is not None:
                request = RequestContext.get().request_id
                return context.call_remote(self.name, *args, **{_REQUEST: request}, **kwargs)
            with _in_request(None):
                return local(*args, **kwargs)

        return call


_HIDDEN = "_tensorlake_{}"  # what a class's replicas run for one of its methods


def cls() -> Callable[[type[T]], type[T]]:
    """Tensorlake's ``@cls``: a class whose ``__init__(self)`` runs once per replica, with
    ``@function`` methods."""

    def decorate(target: type[T]) -> type[T]:
        if list(inspect.signature(target.__init__).parameters)[1:]:
            raise ConfigurationError(f"{target.__name__}.__init__ takes no argument but self")
        loads = target.__init__

        @functools.wraps(loads)
        def __init__(self: Any) -> None:
            # Made inside a running function, an instance only names the class's replicas
            # (its methods run there): what __init__ loads is loaded there, once each.
            if current_context().execution_id is None:
                loads(self)

        target.__init__ = __init__  # type: ignore[method-assign]
        for attribute, member in list(vars(target).items()):
            if isinstance(member, _Function):
                _FUNCTIONS.pop(member.name, None)  # a method, not a function of its own
                setattr(target, _HIDDEN.format(attribute), _method_entry(member.__wrapped__))
                setattr(target, attribute, _Method(member, target.__name__, attribute))
        _CLASSES[target.__name__] = target
        return target

    return decorate


def _methods(target: type) -> dict[str, tuple[str, dict[str, Any]]]:
    """A class's methods: function name -> (what its replicas call, options)."""
    found = {}
    for attribute, member in vars(target).items():
        if isinstance(member, _Method):
            found[member.name] = (_HIDDEN.format(attribute), member.options)
    return found


def serve(engine: AsyncEngine) -> None:
    """Register every Tensorlake function and class of the program on ``engine`` (a daemon's
    app: ``triggerfish serve --app triggerfish.compat.tensorlake:serve`` once the module
    holding them is imported, see the README)."""
    for name, target in _FUNCTIONS.items():
        if name in engine.core.functions:
            continue
        fn = target.__wrapped__
        module, qualname = fn.__module__, fn.__qualname__
        importable = module != "__main__" and "." not in qualname  # a module-level function
        run = _entry(fn, (module, qualname) if importable else None)
        register = engine.application if target.options.application else engine.function
        register(name=name, **target.options.engine)(run)
    for name, klass in _CLASSES.items():
        if name in engine.core.services:
            continue
        methods = _methods(klass)
        specs = {
            fname: FunctionSpec.build(name=fname, service=name, **options)
            for fname, (_, options) in methods.items()
        }
        payload = {
            "kind": "class",
            "target": klass,
            "init_params": {},
            "methods": {fname: hidden for fname, (hidden, _) in methods.items()},
        }
        engine._register(ServiceSpec.build(name=name), specs, payload)


@dataclass(frozen=True)
class Request:
    """An application request: its ``id`` and, once finished, ``output()``."""

    id: str
    _output: Any

    def output(self) -> Any:
        return self._output


_local = Embedded(serve)  # what run_local_application runs applications on


def _application_name(application: _Function | str) -> str:
    name = application if isinstance(application, str) else getattr(application, "name", None)
    if not isinstance(name, str):
        raise ConfigurationError(f"{application!r} is no application")
    return name


def run_local_application(application: _Function | str, input: Any) -> Request:
    """Run an application on the engine in this process; returns once it has its output."""
    name = _application_name(application)
    handle = _local.running().handle(name)
    execution_id = handle.start(input)
    return Request(id=execution_id, _output=handle.await_result(execution_id))


def run_remote_application(application: _Function | str, input: Any) -> Request:
    """Run an application on a daemon (``POST /applications/{name}``) at
    ``TENSORLAKE_API_URL`` with ``TENSORLAKE_API_KEY`` (or triggerfish's own settings);
    returns once it has its output (JSON in and out; an application that reads or writes
    pickle is called with its handle instead)."""
    name = _application_name(application)
    url = os.environ.get("TENSORLAKE_API_URL") or os.environ.get("TRIGGERFISH_API_URL")
    key = os.environ.get("TENSORLAKE_API_KEY") or os.environ.get("TRIGGERFISH_API_KEY")
    with Client(url, key) as client:
        answer = client.request("POST", f"/applications/{name}", json=input)
        while answer.status_code == 202:  # the daemon waited a minute: wait again, by its id
            request_id = answer.json()["request_id"]
            path = f"/applications/{name}/requests/{request_id}"
            answer = client.request("GET", path, params={"timeout": 60})
        return Request(id=answer.headers["X-Request-Id"], _output=answer.json())
