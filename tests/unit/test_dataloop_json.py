"""Dataloop's JSON as Dataloop writes it: the fields only it uses are left out and named once
in the log, a typo is refused with the closest known name, a service's ``runtime.replicas``,
the trigger form its SDK posts (``spec.operation.functionName``) and times without an offset
(its own cron example) are read as meant."""

from __future__ import annotations

import datetime
import logging
from typing import Any

import pytest

from triggerfish import DefinitionError
from triggerfish.models import PackageDefinition, ServiceDefinition
from triggerfish.triggers.definitions import parse_trigger

# A service as Dataloop exports it (runtime.replicas, ids, owners, timestamps).
EXPORTED_SERVICE: dict[str, Any] = {
    "id": "6410a8b7e2d5c0f1a2b3c4d5",
    "name": "service-name",
    "packageName": "default_package",
    "packageRevision": "latest",
    "packageId": "6410a8b7e2d5c0f1a2b3c400",
    "projectId": "2cb9ae90-b6e8-4d15-9016-17bacc9b7bdf",
    "creator": "someone@example.com",
    "url": "https://gate.dataloop.ai/api/v1/services/6410a8b7e2d5c0f1a2b3c4d5",
    "createdAt": "2023-03-14T16:48:55.000Z",
    "updatedAt": "2023-03-14T16:49:02.000Z",
    "botUserName": "bot.abc@bot.dataloop.ai",
    "org": "org-id",
    "isGlobal": False,
    "mq": {},
    "versions": {"dtlpy": "1.80.2"},
    "useUserJwt": False,
    "runtime": {"gpu": False, "replicas": 2, "concurrency": 6, "runnerImage": ""},
    "triggers": [],
    "initParams": {},
    "moduleName": "default_module",
}


def _ignored(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if "definition_fields_ignored" in r.getMessage()]


def test_a_service_as_dataloop_exports_it_deploys_and_its_own_fields_are_named_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="triggerfish")
    service = ServiceDefinition.parse(EXPORTED_SERVICE)
    assert service.runtime.concurrency == 6
    assert service.runtime.replicas == 2  # a fixed count: an autoscaler of two
    assert (service.runtime.autoscaler.min_replicas, service.runtime.autoscaler.max_replicas) == (
        2,
        2,
    )
    (warning,) = _ignored(caplog)  # one line for the definition, naming every field
    for field in ("projectId", "creator", "url", "createdAt", "botUserName", "mq", "versions"):
        assert field in warning
    assert ServiceDefinition.parse(service.to_json()) == service


@pytest.mark.parametrize(
    ("change", "where", "words"),
    [
        ({"runtime": {"concurency": 2}}, "runtime.concurency", "did you mean concurrency?"),
        ({"initparams": {}}, "initparams", "did you mean initParams?"),
        (
            {"runtime": {"autoscaler": {"minReplica": 1}}},
            "runtime.autoscaler.minReplica",
            "minReplicas",
        ),
        ({"shoeSize": 44}, "shoeSize", "unknown field (known: "),
    ],
)
def test_a_field_that_is_no_dataloop_field_is_refused_with_the_closest_known_name(
    change: dict[str, Any], where: str, words: str
) -> None:
    with pytest.raises(DefinitionError) as refused:
        ServiceDefinition.parse({"name": "s", "packageName": "p", **change})
    assert str(refused.value).startswith(f"{where}: unknown field")
    assert words in str(refused.value)


def test_a_package_as_dataloop_exports_it_is_read(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="triggerfish")
    package = PackageDefinition.parse(
        {
            "id": "p-1",
            "name": "default_package",
            "codebase": {"type": "item", "itemId": "x"},
            "creator": "someone@example.com",
            "modules": [
                {
                    "name": "default_module",
                    "className": "ServiceRunner",
                    "entryPoint": "main.py",
                    "initInputs": [],
                    "functions": [
                        {
                            "name": "run",
                            "description": "",
                            "input": [{"name": "item", "type": "Item"}],
                            "output": [],
                        }
                    ],
                }
            ],
        }
    )
    assert package.modules[0].functions[0].name == "run"
    (warning,) = _ignored(caplog)
    assert "codebase" in warning and "creator" in warning and "'id'" in warning


def test_the_trigger_dataloops_sdk_posts_is_read_with_its_function_from_its_operation(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="triggerfish")
    event = parse_trigger(
        {
            "type": "Event",
            "active": True,
            "projectId": "2cb9ae90",
            "name": "on-jpg",
            "spec": {
                "filter": {"filename": {"$match": "*.jpg"}},
                "executionMode": "Once",
                "resource": "Item",
                "actions": ["Created"],
                "operation": {"type": "function", "serviceId": "abc", "functionName": "run"},
            },
        }
    )
    assert event.function == "run" and event.resource == "Item"
    (warning,) = _ignored(caplog)
    assert "trigger.operation.serviceId" in warning and "trigger.projectId" in warning


def test_a_cron_trigger_written_as_dataloops_example_reads_its_times_in_its_time_zone() -> None:
    cron = parse_trigger(
        {
            "type": "Cron",
            "name": "cron-trigger-name",
            "spec": {
                "cron": "0 5 * * *",
                "timezone": "Europe/Berlin",
                "startAt": datetime.datetime(2020, 8, 23).isoformat(),  # no offset
                "endAt": datetime.datetime(2024, 8, 23).isoformat(),
                "input": {},
                "operation": {"type": "function", "functionName": "my_function"},
            },
        }
    )
    assert cron.start_at is not None and cron.end_at is not None
    assert cron.start_at.isoformat() == "2020-08-23T00:00:00+02:00"  # summer time in Berlin
    assert cron.end_at.utcoffset() == datetime.timedelta(hours=2)
    utc = parse_trigger(
        {"name": "u", "function": "f", "cron": "0 5 * * *", "startAt": "2020-08-23T00:00:00"}
    )
    assert utc.start_at is not None and utc.start_at.utcoffset() == datetime.timedelta(0)


@pytest.mark.parametrize(
    ("spec", "where", "words"),
    [
        (
            {"operation": {"type": "pipeline", "functionName": "run"}},
            "trigger.operation.type",
            "only 'function'",
        ),
        (
            {"operation": {"type": "function"}},
            "trigger.operation.functionName",
            "names the function",
        ),
        ({"operation": "run"}, "trigger.operation", "must be an object"),
        (
            {"function": "other", "operation": {"functionName": "run"}},
            "trigger.operation.functionName",
            "not the trigger's function",
        ),
        (
            {"operation": {"functionName": "run", "retries": 3}},
            "trigger.operation.retries",
            "unknown field",
        ),
        (
            {"function": "f", "executionmode": "Once"},
            "trigger.executionmode",
            "did you mean executionMode?",
        ),
        (
            {
                "function": "f",
                "resource": None,  # a cron trigger has none
                "actions": None,
                "cron": "* * * * *",
                "timezone": "Mars/Olympus",
                "startAt": "2020-08-23T00:00:00",
            },
            "trigger.timezone",
            "unknown IANA time zone",
        ),
    ],
)
def test_a_bad_trigger_definition_is_refused_naming_the_field(
    spec: dict[str, Any], where: str, words: str
) -> None:
    with pytest.raises(DefinitionError) as refused:
        parse_trigger({"name": "t", "resource": "Item", "actions": ["Created"], **spec})
    assert str(refused.value).startswith(where), str(refused.value)
    assert words in str(refused.value)


def test_the_service_and_trigger_json_of_dataloops_document_is_read_as_written() -> None:
    """The document's "Trigger JSON" example (a service with its triggers), as written
    there (Python's literals: its filter's quotes and False)."""
    from triggerfish.triggers.definitions import parse_service_triggers

    document = {
        "name": "service-name",
        "packageName": "default_package",
        "packageRevision": "latest",
        "runtime": {"gpu": False, "replicas": 1, "concurrency": 6, "runnerImage": ""},
        "triggers": [
            {
                "name": "trigger-name",
                "filter": {"$and": [{"dir": "/train"}, {"hidden": False}, {"type": "file"}]},
                "resource": "Item",
                "actions": ["Created"],
                "active": True,
                "function": "run",
                "executionMode": "Once",
            }
        ],
        "initParams": {},
        "moduleName": "default_module",
    }
    service = ServiceDefinition.parse(document)
    (trigger,) = parse_service_triggers(document)
    assert service.runtime.autoscaler.max_replicas == 1 and service.runtime.concurrency == 6
    assert trigger.function == "run" and trigger.execution_mode == "Once"
    package = PackageDefinition.parse(
        {
            "name": "default_package",
            "modules": [
                {
                    "name": "default_module",
                    "className": "ServiceRunner",
                    "entryPoint": "main.py",
                    "initInputs": [],
                    "functions": [
                        {
                            "name": "run",
                            "description": "this description for your service",
                            "input": [{"name": "item", "type": "Item"}],
                            "output": [],
                        }
                    ],
                }
            ],
        }
    )
    assert package.module(None).class_name == "ServiceRunner"
