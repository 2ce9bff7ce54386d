"""Packages, revisions and deployed services through the daemon: the CLI, HTTP and the client."""

from __future__ import annotations

import io
import json
import threading
import time
import zipfile
from pathlib import Path
from typing import Any

import httpx
import pytest

from triggerfish import Client, InvocationFailedError

from ..unit.test_codebase import zeros_zip
from .helpers import Daemon, cli, poll, wait_finished

ZIP = "application/zip"

CODE = """
class Runner:
    def __init__(self, suffix):
        self.suffix = suffix          # once per replica

    def tag(self, text):
        return f"{text}-{VERSION}-{self.suffix}"


VERSION = "{version}"
"""


def codebase(directory: Path, version: str, service: dict[str, Any] | None = None) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "main.py").write_text(CODE.replace("{version}", version))
    package = {
        "name": "tagger",
        "modules": [
            {
                "name": "default_module",
                "entryPoint": "main.py",
                "className": "Runner",
                "initInputs": [{"name": "suffix", "type": "Json"}],
                "functions": [{"name": "tag", "input": [{"name": "text", "type": "Json"}]}],
            }
        ],
    }
    (directory / "package.json").write_text(json.dumps(package))
    service = service or {
        "name": "tags",
        "packageName": "tagger",
        "packageRevision": "latest",
        "initParams": {"suffix": "s"},
        "runtime": {"concurrency": 2, "autoscaler": {"minReplicas": 1, "maxReplicas": 1}},
    }
    (directory / "service.json").write_text(json.dumps(service))
    return directory


def test_deploy_revisions_older_revision_and_rollback(daemon: Daemon, tmp_path: Path) -> None:
    first = cli(daemon, "deploy", str(codebase(tmp_path / "v1", "v1")))
    assert first.returncode == 0, first.stderr
    assert "pushed tagger revision 1" in first.stdout
    assert "deployed tags version 1" in first.stdout
    second = cli(daemon, "deploy", str(codebase(tmp_path / "v2", "v2")))
    assert second.returncode == 0, second.stderr
    assert "revision 2" in second.stdout and "version 2" in second.stdout

    with Client(daemon.url, daemon.key) as client:
        assert client.function("tags", "tag").call_remote("a") == "a-v2-s"
        assert client.function("tags", "tag", revision=1).call_remote("b") == "b-v1-s"
        with daemon.http() as http:
            revisions = http.get("/packages/tagger/revisions").json()
            assert [r["revision"] for r in revisions] == [1, 2]
            zipped = http.get("/packages/tagger/revisions/1/codebase")
            assert zipped.headers["content-type"] == "application/zip"
            with zipfile.ZipFile(io.BytesIO(zipped.content)) as archive:
                assert 'VERSION = "v1"' in archive.read("main.py").decode()
            rollback = {**json.loads((tmp_path / "v1" / "service.json").read_text())}
            rollback["packageRevision"] = 1
            deployed = http.post("/services", json=rollback)
            assert deployed.status_code == 201, deployed.text
            assert deployed.json()["version"] == 3 and deployed.json()["revision"] == 1
            assert client.function("tags.tag").call_remote("c") == "c-v1-s"
            versions = http.get("/services/tags/versions").json()
            assert [(v["version"], v["revision"]) for v in versions] == [(1, 1), (2, 2), (3, 1)]
            execution_id = client.function("tags.tag").start("d")
            assert client.await_result(execution_id) == "d-v1-s"
            assert http.get(f"/executions/{execution_id}").json()["function"] == "tags.tag@1"

    listed = cli(daemon, "packages", "revisions", "tagger")
    assert listed.returncode == 0 and listed.stdout.count("│ ") >= 2
    described = cli(daemon, "services", "describe", "tags")
    assert json.loads(described.stdout)["deployment"]["version"] == 3


def test_pause_keeps_work_pending_and_resume_runs_it(daemon: Daemon, tmp_path: Path) -> None:
    service = {
        "name": "paused",
        "packageName": "tagger",
        "initParams": {"suffix": "p"},
        "runtime": {"concurrency": 2},
    }
    directory = codebase(tmp_path / "p", "p1", service)
    assert cli(daemon, "deploy", str(directory)).returncode == 0
    paused = cli(daemon, "services", "pause", "paused")
    assert paused.returncode == 0 and "Inactive" in paused.stdout
    with Client(daemon.url, daemon.key) as client:
        handle = client.function("paused.tag")
        ids = [handle.start(f"x{i}") for i in range(3)]
        with daemon.http() as http:
            waited = http.get(f"/executions/{ids[0]}/result", params={"timeout": 1})
            assert waited.status_code == 202 and waited.json()["status"] == "PENDING"
            assert http.get("/services/paused").json()["state"] == "Inactive"
        resumed = cli(daemon, "services", "resume", "paused")
        assert resumed.returncode == 0 and "Active" in resumed.stdout
        assert [handle.await_result(i, timeout=30) for i in ids] == [
            "x0-p1-p",
            "x1-p1-p",
            "x2-p1-p",
        ]


def test_a_codebase_that_fails_to_import_shows_why(daemon: Daemon, tmp_path: Path) -> None:
    service = {"name": "broken", "packageName": "broken", "runtime": {"concurrency": 1}}
    directory = tmp_path / "broken"
    directory.mkdir()
    (directory / "main.py").write_text("import no_such_module_here\n")
    package = {
        "name": "broken",
        "modules": [{"name": "m", "entryPoint": "main.py", "functions": [{"name": "f"}]}],
    }
    (directory / "package.json").write_text(json.dumps(package))
    (directory / "service.json").write_text(json.dumps(service))
    assert cli(daemon, "deploy", str(directory)).returncode == 0
    with daemon.http() as http:

        def errored() -> dict[str, Any] | None:
            status: dict[str, Any] = http.get("/services/broken").json()
            return status if status["state"] == "Error" else None

        status = poll(errored, 30, "the service to show its error")
        assert "no_such_module_here" in status["error"]["traceback"]
        started = http.post("/functions/broken.f/executions", json={"args": []})
        assert started.status_code == 201
        execution_id = started.json()["execution_ids"][0]
    outcome = wait_finished(daemon, execution_id)
    assert outcome["status"] == "FAILED"
    assert "no_such_module_here" in json.dumps(outcome["error"])
    with Client(daemon.url, daemon.key) as client, pytest.raises(InvocationFailedError):
        client.function("broken.f").call_remote()


def test_bad_packages_are_refused_naming_the_field(daemon: Daemon, tmp_path: Path) -> None:
    directory = codebase(tmp_path / "bad", "v")
    package = json.loads((directory / "package.json").read_text())
    package["modules"][0]["entryPoint"] = "missing.py"
    (directory / "package.json").write_text(json.dumps(package))
    refused = cli(daemon, "deploy", str(directory))
    assert refused.returncode == 1
    assert "modules[0].entryPoint" in refused.stderr and "Traceback" not in refused.stderr
    with daemon.http() as http:
        assert http.get("/packages/nothing-here").status_code == 404
        assert http.get("/packages/tagger/revisions/99").status_code == 404
        not_zip = http.post(
            "/packages", content=b"not a zip", headers={"Content-Type": "application/zip"}
        )
        assert not_zip.status_code == 400 and not_zip.json()["detail"]
        bad_service = http.post("/services", json={"name": "x", "packageName": "nothing-here"})
        assert bad_service.status_code == 400 and "packageName" in bad_service.json()["detail"]


def zip_bomb(inflated: int, declared: int) -> bytes:
    """A codebase zip whose ``data.bin`` holds ``inflated`` zero bytes (deflated: a
    thousandth of that) while its local header and central directory declare ``declared``."""
    package = {"name": "bomb", "modules": [{"entryPoint": "main.py", "functions": [{"name": "f"}]}]}
    files = {"package.json": json.dumps(package), "main.py": "def f():\n    return 1\n"}
    return zeros_zip(inflated, declared, files=files)


def test_a_zip_bomb_is_refused_while_the_daemon_stays_healthy(daemon: Daemon) -> None:
    bomb = zip_bomb(600 * 1024 * 1024, declared=1024)
    assert len(bomb) < 2 * 1024 * 1024
    answers: list[httpx.Response] = []

    def push() -> None:
        with daemon.http() as http:
            answers.append(http.post("/packages", content=bomb, headers={"Content-Type": ZIP}))

    pushing = threading.Thread(target=push)
    health: list[tuple[int, float]] = []  # (status, seconds) of each /health while it pushes
    with daemon.http(timeout=5) as http:
        pushing.start()
        while pushing.is_alive():
            started = time.monotonic()
            health.append((http.get("/health").status_code, time.monotonic() - started))
            time.sleep(0.02)
        pushing.join()
        assert health and all(status == 200 for status, _ in health), health
        # Inflating 500 MiB takes about a second; on the event loop it would hold /health.
        assert max(seconds for _, seconds in health) < 0.5, health
        assert http.get("/health").status_code == 200
    (refused,) = answers
    assert refused.status_code == 400, refused.text
    detail = refused.json()["detail"]
    assert "too large when inflated" in detail and "'data.bin' declares 1024 bytes" in detail
    with daemon.http() as http:
        honest = zip_bomb(1024, declared=1024)  # it declares what it holds
        pushed = http.post("/packages", content=honest, headers={"Content-Type": ZIP})
        assert pushed.status_code == 201, pushed.text
        assert (pushed.json()["name"], pushed.json()["revision"]) == ("bomb", 1)
        assert http.get("/health").status_code == 200


def test_triggers_and_services_export_as_dataloop_json_and_load_back_the_same(
    daemon: Daemon, tmp_path: Path
) -> None:
    service = {
        "name": "exported",
        "packageName": "tagger",
        "packageRevision": "latest",
        "initParams": {"suffix": "x"},
        "runtime": {"replicas": 1, "concurrency": 2},
        "triggers": [
            {
                "name": "exported-on-jpg",
                "type": "Event",
                "spec": {
                    "resource": "Item",
                    "actions": ["Created"],
                    "filter": {"filename": {"$match": "*.jpg"}},
                    "executionMode": "Once",
                    "operation": {"type": "function", "functionName": "tag"},
                },
            }
        ],
    }
    deployed = cli(daemon, "deploy", str(codebase(tmp_path / "code", "v1", service)))
    assert deployed.returncode == 0, deployed.stderr
    cron = {
        "name": "exported-nightly",
        "function": "exported.tag",
        "cron": "0 5 * * *",
        "timezone": "Europe/Berlin",
        "startAt": "2026-08-23T00:00:00",  # no offset: read in Berlin
        "input": {"text": "nightly"},
        "misfire": "skip",
    }
    ours = ("exported-on-jpg", "exported-nightly")
    with daemon.http() as http:
        assert http.post("/triggers", json=cron).status_code == 201
        before = {name: http.get(f"/triggers/{name}").json()["spec"] for name in ours}
        deployment = http.get("/services/exported/deployment").json()

    exported = cli(daemon, "triggers", "export")
    assert exported.returncode == 0, exported.stderr
    written = [t for t in json.loads(exported.stdout) if t["name"] in ours]
    assert {t["type"] for t in written} == {"Event", "Cron"}  # Dataloop's nested form
    assert all(t["spec"]["operation"]["functionName"] == "exported.tag" for t in written)
    with daemon.http() as http:
        for name in ours:
            assert http.delete(f"/triggers/{name}").status_code == 204
    (tmp_path / "triggers.json").write_text(json.dumps(written))
    applied = cli(daemon, "triggers", "apply", "-f", str(tmp_path / "triggers.json"))
    assert applied.returncode == 0, applied.stderr
    with daemon.http() as http:
        after = {name: http.get(f"/triggers/{name}").json()["spec"] for name in ours}
    assert after == before

    exported_service = cli(daemon, "services", "export", "exported")
    assert exported_service.returncode == 0, exported_service.stderr
    document = json.loads(exported_service.stdout)
    assert document["packageRevision"] == deployment["revision"]  # pinned
    with daemon.http() as http:
        again = http.post("/services", json=document)
        assert again.status_code == 201, again.text
        assert again.json()["definition"] == deployment["definition"]
        assert again.json()["version"] == deployment["version"] + 1
    unknown = cli(daemon, "services", "export", "nothing-here")
    assert unknown.returncode != 0 and "nothing-here" in unknown.stderr
