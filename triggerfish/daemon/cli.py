"""The ``triggerfish`` command: run the daemon, and talk to one from the shell.

Every command but ``serve`` and ``keys create`` talks to a daemon at ``--url`` (or
``$TRIGGERFISH_API_URL``, default http://127.0.0.1:8765) with ``--api-key`` (or
``$TRIGGERFISH_API_KEY``, or the key ``login`` saved for that URL). Lists are tables; an error
is one line on stderr and exit status 1, never a traceback.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, NoReturn
from urllib.parse import urlencode

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from ..errors import InvocationError, TriggerfishError

app = typer.Typer(
    name="triggerfish",
    help="Functions as a service: run the daemon, deploy, invoke, watch executions.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
functions_app = typer.Typer(help="Registered functions.", no_args_is_help=True)
executions_app = typer.Typer(help="Executions: list, describe, wait.", no_args_is_help=True)
triggers_app = typer.Typer(help="Event and cron triggers.", no_args_is_help=True)
services_app = typer.Typer(help="Services and their replicas.", no_args_is_help=True)
keys_app = typer.Typer(help="API keys.", no_args_is_help=True)
packages_app = typer.Typer(help="Packages and their revisions.", no_args_is_help=True)
app.add_typer(functions_app, name="functions")
app.add_typer(executions_app, name="executions")
app.add_typer(triggers_app, name="triggers")
app.add_typer(services_app, name="services")
app.add_typer(keys_app, name="keys")
app.add_typer(packages_app, name="packages")

out = Console()
err = Console(stderr=True, soft_wrap=True)

Url = Annotated[
    str | None,
    typer.Option("--url", envvar="TRIGGERFISH_API_URL", help="the daemon's URL", show_envvar=True),
]
Key = Annotated[
    str | None,
    typer.Option("--api-key", envvar="TRIGGERFISH_API_KEY", help="an API key", show_envvar=True),
]
AsJson = Annotated[bool, typer.Option("--json", help="print JSON instead of a table")]


def fail(message: str) -> NoReturn:
    err.print(f"[red]error:[/red] {message}", highlight=False, markup=True)
    raise typer.Exit(1)


@contextmanager
def client(url: str | None, key: str | None) -> Iterator[Any]:
    """A blocking Client; errors become one line and exit status 1."""
    from ..sdk.remote import Client

    try:
        with Client(url, key) as connected:
            yield connected
    except TriggerfishError as exc:
        line = str(exc).splitlines()[0]
        if isinstance(exc, InvocationError) and exc.execution_id:
            line += f" (details: triggerfish executions describe {exc.execution_id})"
        fail(line)


def parse_json(text: str | None, what: str) -> Any:
    if text is None:
        return None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        fail(f"{what} is not JSON: {exc}")


def print_json(value: Any) -> None:
    out.print_json(json.dumps(value, default=str))


def table(title: str, columns: list[str], rows: list[list[Any]]) -> None:
    grid = Table(title=title, title_justify="left")
    for i, column in enumerate(columns):
        grid.add_column(column, no_wrap=i == 0, overflow="fold")
    for row in rows:
        grid.add_row(*("" if cell is None else str(cell) for cell in row))
    out.print(grid)


# -- the daemon ---------------------------------------------------------------------------


@app.command()
def serve(
    config: Annotated[Path | None, typer.Option(help="a TOML config file")] = None,
    host: Annotated[str | None, typer.Option(help="address to bind (127.0.0.1)")] = None,
    port: Annotated[int | None, typer.Option(help="port (8765; 0 picks a free one)")] = None,
    data_dir: Annotated[Path | None, typer.Option(help="where the store lives")] = None,
    store: Annotated[
        str | None,
        typer.Option(
            help="a sqlite file or a PostgreSQL URL (postgresql://...); default: in data-dir"
        ),
    ] = None,
    app_spec: Annotated[
        str | None,
        typer.Option("--app", help="module:function that registers functions on the engine"),
    ] = None,
    drain_timeout: Annotated[float | None, typer.Option(help="seconds to drain on stop")] = None,
) -> None:
    """Run the engine and its HTTP API until SIGTERM or Ctrl-C."""
    import anyio

    from .config import load_config
    from .server import serve as run

    sys.path.insert(0, str(Path.cwd()))  # --app modules next to where it is started
    try:
        settings = load_config(
            config,
            host=host,
            port=port,
            data_dir=data_dir,
            store=store,
            app=app_spec,
            drain_timeout=drain_timeout,
        )
        logging.basicConfig(stream=sys.stderr, level=logging.WARNING, format="%(message)s")
        logging.getLogger("triggerfish").setLevel(logging.INFO)

        def ready(url: str) -> None:
            err.print(
                f"triggerfish serving on {url} (store {settings.store_name})", highlight=False
            )

        # uvloop (installed with uvicorn[standard]): the daemon is I/O bound on sockets and pipes
        anyio.run(lambda: run(settings, on_ready=ready), backend_options={"use_uvloop": True})
    except TriggerfishError as exc:
        fail(str(exc))


@keys_app.command("create")
def keys_create() -> None:
    """Make a new API key: put its hash in the daemon's api_keys, give the key to clients."""
    from .auth import hash_key, new_key

    key = new_key()
    out.print(f"key:  {key}\nhash: {hash_key(key)}", highlight=False)


@app.command()
def login(
    url: Url = None,
    key: Annotated[
        str | None, typer.Option("--api-key", help="the key (asked if not given)")
    ] = None,
) -> None:
    """Save an API key for a daemon (checked against it first)."""
    from ..sdk.client import DEFAULT_URL
    from ..sdk.credentials import save_key

    url = (url or DEFAULT_URL).rstrip("/")
    key = key or typer.prompt("API key", hide_input=True)
    with client(url, key) as connected:
        connected.request("GET", "/functions")
    path = save_key(url, key)
    out.print(f"logged in to {url} (key saved in {path})", highlight=False)


@app.command()
def status(url: Url = None, key: Key = None, as_json: AsJson = False) -> None:
    """Whether the daemon is up, and its services."""
    with client(url, key) as connected:
        health = connected.health()
        services = connected.request("GET", "/services").json()
    if as_json:
        print_json({"health": health, "services": services})
        return
    out.print(f"daemon at {connected.url}: {health['status']}", highlight=False)
    _services_table(services)


def _services_table(services: list[dict[str, Any]]) -> None:
    rows = [
        [
            s["name"],
            s["state"],
            s["replicas"],
            s["busy_slots"],
            s["queued"],
            (s.get("error") or {}).get("message"),
        ]
        for s in services
    ]
    table("services", ["name", "state", "replicas", "busy", "queued", "error"], rows)


@services_app.command("list")
def services_list(url: Url = None, key: Key = None, as_json: AsJson = False) -> None:
    """Every service with its state and load."""
    with client(url, key) as connected:
        services = connected.request("GET", "/services").json()
    print_json(services) if as_json else _services_table(services)


@services_app.command("describe")
def services_describe(name: str, url: Url = None, key: Key = None) -> None:
    """One service: its state (with its init error, if any) and its current deployment."""
    with client(url, key) as connected:
        described = {"status": connected.request("GET", f"/services/{name}").json()}
        try:
            deployment = connected.request("GET", f"/services/{name}/deployment").json()
            described["deployment"] = deployment
        except TriggerfishError:
            pass  # registered by the daemon's app, not deployed from a package
    print_json(described)


@services_app.command("export")
def services_export(
    name: Annotated[str | None, typer.Argument(help="one service (default: every one)")] = None,
    url: Url = None,
    key: Key = None,
) -> None:
    """Deployed services as Dataloop's service JSON (the current version, its package
    revision pinned): what `triggerfish deploy` or POST /services reads back as the same."""
    with client(url, key) as connected:
        services = connected.request("GET", "/services/export").json()
    if name is not None:
        chosen = [s for s in services if s["name"] == name]
        if not chosen:
            fail(f"no service named {name!r} is deployed")
        typer.echo(json.dumps(chosen[0], indent=2, ensure_ascii=False))
        return
    typer.echo(json.dumps(services, indent=2, ensure_ascii=False))


@services_app.command("versions")
def services_versions(name: str, url: Url = None, key: Key = None) -> None:
    """Every version of a deployed service, with the package revision it ran."""
    with client(url, key) as connected:
        versions = connected.request("GET", f"/services/{name}/versions").json()
    rows = [
        [v["version"], v["package"], v["revision"], v["module"], v["created_at"]] for v in versions
    ]
    table(f"versions of {name}", ["version", "package", "revision", "module", "created"], rows)


def _service_verb(verb: str) -> Callable[..., None]:
    def command(name: str, url: Url = None, key: Key = None) -> None:
        with client(url, key) as connected:
            state = connected.request("POST", f"/services/{name}/{verb}").json()
        out.print(f"{name}: {state['state']}", highlight=False)

    command.__doc__ = {
        "pause": "Pause a deployed service: nothing new starts, executions wait PENDING.",
        "resume": "Resume a paused service: what waited runs.",
    }[verb]
    return command


for _verb in ("pause", "resume"):
    services_app.command(_verb)(_service_verb(_verb))


# -- packages and deployments -------------------------------------------------------------


@app.command()
def deploy(
    directory: Annotated[Path, typer.Argument(help="a codebase with its package.json")],
    service: Annotated[
        Path | None,
        typer.Option(help="a service JSON to deploy (default: service.json in DIRECTORY)"),
    ] = None,
    url: Url = None,
    key: Key = None,
) -> None:
    """Push DIRECTORY as the next revision of its package, then deploy its service JSON."""
    from ..engine.codebase import zip_directory

    try:
        data = zip_directory(directory)
    except TriggerfishError as exc:
        fail(str(exc))
    service_file = service or directory / "service.json"
    definition = None
    if service is not None or service_file.exists():
        definition = _read_json(service_file)
    with client(url, key) as connected:
        pushed = connected.request(
            "POST", "/packages", content=data, headers={"Content-Type": "application/zip"}
        ).json()
        out.print(f"pushed {pushed['name']} revision {pushed['revision']}", highlight=False)
        if definition is None:
            return
        deployed = connected.request("POST", "/services", json=definition).json()
    out.print(
        f"deployed {deployed['name']} version {deployed['version']} "
        f"({deployed['package']} revision {deployed['revision']})",
        highlight=False,
    )


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except OSError as exc:
        fail(f"cannot read {path}: {exc.strerror}")
    except json.JSONDecodeError as exc:
        fail(f"{path} is not JSON: {exc}")


@packages_app.command("list")
def packages_list(url: Url = None, key: Key = None, as_json: AsJson = False) -> None:
    """Every package, at its latest revision."""
    with client(url, key) as connected:
        packages = connected.request("GET", "/packages").json()
    if as_json:
        print_json(packages)
        return
    rows = [
        [
            p["name"],
            p["revision"],
            ", ".join(m["name"] for m in p["package"]["modules"]),
            p["codebase_size"],
            p["created_at"],
        ]
        for p in packages
    ]
    table("packages", ["name", "revision", "modules", "codebase bytes", "created"], rows)


@packages_app.command("describe")
def packages_describe(
    name: str,
    revision: Annotated[int | None, typer.Option(help="this revision (default: latest)")] = None,
    url: Url = None,
    key: Key = None,
) -> None:
    """A package revision: its package JSON and codebase digest."""
    path = f"/packages/{name}" if revision is None else f"/packages/{name}/revisions/{revision}"
    with client(url, key) as connected:
        print_json(connected.request("GET", path).json())


@packages_app.command("revisions")
def packages_revisions(name: str, url: Url = None, key: Key = None) -> None:
    """Every revision of a package, oldest first."""
    with client(url, key) as connected:
        revisions = connected.request("GET", f"/packages/{name}/revisions").json()
    rows = [
        [r["revision"], r["codebase_sha256"][:12], r["codebase_size"], r["created_at"]]
        for r in revisions
    ]
    table(f"revisions of {name}", ["revision", "codebase", "bytes", "created"], rows)


@packages_app.command("download")
def packages_download(
    name: str,
    revision: Annotated[int, typer.Option(help="the revision")],
    output: Annotated[Path, typer.Option("--output", "-o", help="the zip file to write")],
    url: Url = None,
    key: Key = None,
) -> None:
    """Download a revision's codebase as a zip."""
    with client(url, key) as connected:
        data = connected.request("GET", f"/packages/{name}/revisions/{revision}/codebase").content
    output.write_bytes(data)
    out.print(f"wrote {output} ({len(data)} bytes)", highlight=False)


# -- functions and executions -------------------------------------------------------------


@functions_app.command("list")
def functions_list(url: Url = None, key: Key = None, as_json: AsJson = False) -> None:
    """Every registered function."""
    with client(url, key) as connected:
        functions = connected.request("GET", "/functions").json()
    if as_json:
        print_json(functions)
        return
    rows = [
        [f["name"], f["service"], f"{f['timeout']:g}s", f["max_attempts"], f["description"]]
        for f in functions
    ]
    table("functions", ["name", "service", "timeout", "attempts", "description"], rows)


@functions_app.command("describe")
def functions_describe(name: str, url: Url = None, key: Key = None) -> None:
    """A function's spec and how many of its executions are in each status."""
    with client(url, key) as connected:
        info = connected.request("GET", f"/functions/{name}").json()
        info["statistics"] = connected.request("GET", f"/functions/{name}/statistics").json()
    print_json(info)


@app.command()
def call(
    function: str,
    args: Annotated[str | None, typer.Option(help="positional arguments, a JSON array")] = None,
    kwargs: Annotated[str | None, typer.Option(help="keyword arguments, a JSON object")] = None,
    count: Annotated[int, typer.Option(min=1, help="start this many and wait for all")] = 1,
    url: Url = None,
    key: Key = None,
) -> None:
    """Run a function with JSON arguments and print its result (or each result's status)."""
    positional = parse_json(args, "--args") or []
    named = parse_json(kwargs, "--kwargs") or {}
    if not isinstance(positional, list):
        fail("--args must be a JSON array")
    if not isinstance(named, dict):
        fail("--kwargs must be a JSON object")
    with client(url, key) as connected:
        handle = connected.function(function)
        if count == 1:
            print_json(handle.call_remote(*positional, **named))
            return
        ids = handle.start_many([(tuple(positional), named)] * count)
        _wait_all(connected, ids)


def _wait_all(connected: Any, ids: list[str]) -> None:
    """Wait for executions with a progress bar; a summary of how they ended."""
    ended: dict[str, int] = {}
    columns = (TextColumn("executions"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=err) as progress:
        task = progress.add_task("wait", total=len(ids))
        for execution_id in ids:
            try:
                connected.await_result(execution_id)
                ended["SUCCEEDED"] = ended.get("SUCCEEDED", 0) + 1
            except InvocationError as exc:
                name = type(exc).__name__.removeprefix("Invocation").removesuffix("Error")
                ended[name.upper()] = ended.get(name.upper(), 0) + 1
            progress.advance(task)
    out.print(", ".join(f"{n} {s}" for s, n in sorted(ended.items())), highlight=False)
    if set(ended) - {"SUCCEEDED"}:
        raise typer.Exit(1)


@executions_app.command("list")
def executions_list(
    function: Annotated[str | None, typer.Option(help="only this function's")] = None,
    status_filter: Annotated[
        list[str] | None, typer.Option("--status", help="only in this status (repeatable)")
    ] = None,
    trigger: Annotated[str | None, typer.Option(help="only fired by this trigger")] = None,
    limit: Annotated[int, typer.Option(min=1, max=1000)] = 20,
    offset: Annotated[str | None, typer.Option(help="the next page, from the last list")] = None,
    url: Url = None,
    key: Key = None,
    as_json: AsJson = False,
) -> None:
    """Executions, newest first."""
    params: dict[str, Any] = {"limit": limit}
    for name, value in (("function", function), ("trigger", trigger), ("offset", offset)):
        if value is not None:
            params[name] = value
    if status_filter:
        params["status"] = [s.upper() for s in status_filter]
    with client(url, key) as connected:
        page = connected.request("GET", "/executions", params=params).json()
    if as_json:
        print_json(page)
        return
    rows = [
        [
            e["id"],
            e["function"],
            e["status"],
            f"{e['attempts']}/{e['max_attempts']}",
            e["created_at"],
            f"{e['duration']:.3f}s" if e["duration"] is not None else None,
        ]
        for e in page["executions"]
    ]
    table("executions", ["id", "function", "status", "attempts", "created", "duration"], rows)
    if page["offset"]:
        out.print(f"more: --offset {page['offset']}", highlight=False)


@executions_app.command("describe")
def executions_describe(execution_id: str, url: Url = None, key: Key = None) -> None:
    """An execution: status log, result or error, trigger and event."""
    with client(url, key) as connected:
        print_json(connected.request("GET", f"/executions/{execution_id}").json())


@executions_app.command("wait")
def executions_wait(
    execution_ids: Annotated[list[str], typer.Argument(help="execution ids")],
    url: Url = None,
    key: Key = None,
) -> None:
    """Wait for executions to finish, with a progress bar; exit 1 if any did not succeed."""
    with client(url, key) as connected:
        _wait_all(connected, execution_ids)


@app.command()
def logs(
    execution_id: str,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="until it finishes")] = False,
    url: Url = None,
    key: Key = None,
) -> None:
    """An execution's stdout, stderr and logging."""
    with client(url, key) as connected:
        if not follow:
            entries = connected.request("GET", f"/executions/{execution_id}/logs").json()["logs"]
            for entry in entries:
                _print_log(entry)
            return
        for line in connected.stream_lines(f"/executions/{execution_id}/logs?follow=true"):
            _print_log(json.loads(line))


@app.command()
def watch(
    function: Annotated[str | None, typer.Option(help="only this function's events")] = None,
    kind: Annotated[
        list[str] | None, typer.Option(help="only events of this kind (repeatable)")
    ] = None,
    execution: Annotated[str | None, typer.Option(help="only this execution's events")] = None,
    url: Url = None,
    key: Key = None,
    as_json: AsJson = False,
) -> None:
    """The engine's events, live, a line each, until Ctrl-C (or the daemon stops)."""
    params = [("kind", k) for k in kind or ()]
    params += [(n, v) for n, v in (("function", function), ("execution_id", execution)) if v]
    path = "/events/stream" + (f"?{urlencode(params)}" if params else "")
    with client(url, key) as connected:
        for line in connected.stream_lines(path):
            if not line.startswith("data: "):
                continue  # the event's name, or a keep-alive comment
            event = json.loads(line[len("data: ") :])
            if as_json:
                print(json.dumps(event), flush=True)
            else:
                print(_event_line(event), flush=True)


#: What ``watch`` shows of each kind of event, after its time and kind.
_EVENT_FIELDS = {
    "ExecutionCreated": ("execution_id", "function", "trigger_id"),
    "ExecutionStatusChanged": ("execution_id", "function", "status", "progress", "message"),
    "ExecutionLogged": ("execution_id", "stream", "text"),
    "ReplicaStarted": ("service", "replica_id"),
    "ReplicaLost": ("service", "replica_id", "reason"),
    "ServiceStateChanged": ("service", "state", "error_message"),
    "TriggerFired": ("trigger_id", "execution_id", "function"),
    "TriggerSuppressed": ("trigger", "reason"),
    "CronMissed": ("trigger", "missed", "policy"),
    "SubscriberLagged": ("missed",),
}


def _event_line(event: dict[str, Any]) -> str:
    at = datetime.fromtimestamp(event["at"], UTC).strftime("%H:%M:%S.%f")[:-3]
    fields = _EVENT_FIELDS.get(event["kind"], ())
    shown = [str(event[f]).rstrip("\n") for f in fields if event.get(f) not in (None, "")]
    return " ".join([at, event["kind"], *shown])


def _print_log(entry: dict[str, Any]) -> None:
    stream = sys.stderr if entry["stream"] == "stderr" else sys.stdout
    stream.write(entry["text"] if entry["text"].endswith("\n") else entry["text"] + "\n")
    stream.flush()


@app.command()
def cancel(execution_id: str, url: Url = None, key: Key = None) -> None:
    """Cancel an execution."""
    with client(url, key) as connected:
        execution = connected.request("POST", f"/executions/{execution_id}/cancel").json()
    out.print(f"{execution_id}: {execution['status']}", highlight=False)


@app.command()
def rerun(execution_id: str, url: Url = None, key: Key = None) -> None:
    """Run a FAILED or TIMED_OUT execution again."""
    with client(url, key) as connected:
        ids = connected.request("POST", f"/executions/{execution_id}/rerun").json()
    started = ids["execution_ids"]
    if not started:
        fail(f"{execution_id} was not run again (only FAILED or TIMED_OUT executions are)")
    out.print(f"{execution_id}: running again", highlight=False)


# -- triggers and events -----------------------------------------------------------------


def _definitions(document: Any) -> list[Any]:
    if isinstance(document, list):
        return document
    if isinstance(document, dict) and "triggers" in document:
        triggers = document["triggers"]
        if not isinstance(triggers, list):
            fail("the service JSON's 'triggers' must be an array")
        return triggers
    return [document]


@triggers_app.command("apply")
def triggers_apply(
    file: Annotated[
        Path, typer.Option("--file", "-f", help="trigger JSON, an array, or a service JSON")
    ],
    url: Url = None,
    key: Key = None,
) -> None:
    """Create triggers, or update those of the same name."""
    try:
        document = json.loads(file.read_text())
    except OSError as exc:
        fail(f"cannot read {file}: {exc.strerror}")
    except json.JSONDecodeError as exc:
        fail(f"{file} is not JSON: {exc}")
    with client(url, key) as connected:
        for i, definition in enumerate(_definitions(document)):
            try:
                trigger = connected.request(
                    "POST", "/triggers", json=definition, params={"replace": "true"}
                ).json()
            except TriggerfishError as exc:
                fail(f"{file} trigger {i}: {exc}")
            out.print(f"applied {trigger['spec']['name']} ({trigger['id']})", highlight=False)


@triggers_app.command("export")
def triggers_export(url: Url = None, key: Key = None) -> None:
    """Every trigger as Dataloop's JSON (the nested form its SDK posts), an array that
    `triggerfish triggers apply -f` reads back as the same triggers."""
    with client(url, key) as connected:
        triggers = connected.request("GET", "/triggers/export").json()
    typer.echo(json.dumps(triggers, indent=2, ensure_ascii=False))


@triggers_app.command("list")
def triggers_list(url: Url = None, key: Key = None, as_json: AsJson = False) -> None:
    """Every trigger with its counts: fired, suppressed (loop protection), missed (cron)."""
    with client(url, key) as connected:
        triggers = connected.request("GET", "/triggers").json()
    if as_json:
        print_json(triggers)
        return
    rows = []
    for t in triggers:
        spec, stats = t["spec"], t["stats"]
        on = spec.get("cron") or f"{spec.get('resource')} {','.join(spec.get('actions', []))}"
        rows.append(
            [
                spec["name"],
                spec["type"],
                on,
                spec["function"],
                "yes" if spec["active"] else "no",
                stats["fired"],
                stats["suppressed"],
                stats["missed"],
            ]
        )
    columns = ["name", "type", "on", "function", "active", "fired", "suppressed", "missed"]
    table("triggers", columns, rows)


def _trigger_action(verb: str) -> Callable[..., None]:
    def command(trigger: str, url: Url = None, key: Key = None) -> None:
        with client(url, key) as connected:
            if verb == "delete":
                connected.request("DELETE", f"/triggers/{trigger}")
                out.print(f"deleted {trigger}", highlight=False)
                return
            connected.request("POST", f"/triggers/{trigger}/{verb}")
        out.print(f"{verb}d {trigger}", highlight=False)

    command.__doc__ = f"{verb.capitalize()} a trigger (by id or name)."
    return command


for _verb in ("activate", "deactivate", "delete"):
    triggers_app.command(_verb)(_trigger_action(_verb))


@triggers_app.command("describe")
def triggers_describe(trigger: str, url: Url = None, key: Key = None) -> None:
    """A trigger's spec and statistics, with the last suppression's reason."""
    with client(url, key) as connected:
        print_json(connected.request("GET", f"/triggers/{trigger}").json())


@app.command()
def emit(
    resource: str,
    action: str,
    body: Annotated[str | None, typer.Option(help="the resource JSON")] = None,
    resource_id: Annotated[str | None, typer.Option("--id", help="the resource id")] = None,
    url: Url = None,
    key: Key = None,
) -> None:
    """Publish an event; prints the executions it caused."""
    document = parse_json(body, "--body")
    with client(url, key) as connected:
        ids = connected.emit(resource, action, document, resource_id)
    out.print("\n".join(ids) if ids else "no trigger fired", highlight=False)


def main() -> None:
    app()
