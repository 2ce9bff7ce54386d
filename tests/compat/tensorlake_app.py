"""An application written for Tensorlake: only the import line is triggerfish's. The
replicas import this module by name, as Tensorlake's containers would."""

from __future__ import annotations

import os

from triggerfish.compat.tensorlake import RequestContext, Retries, application, cls, function


@application()
@function(description="greets someone, twice")
def greet(name: str) -> dict:
    ctx = RequestContext.get()
    greeter = Greeter()  # names the class's containers: nothing is loaded here
    return {
        "hello": say_hello(name),  # runs in its own function container
        "shout": greeter.shout(name),  # runs in the class's container
        "loaded_here": hasattr(greeter, "greeting"),
        "request_id": ctx.request_id,
        "pid": os.getpid(),
    }


@function(cpu=2, memory=2, ephemeral_disk=4, timeout=60, retries=Retries(max_retries=2))
def say_hello(name: str) -> dict:
    ctx = RequestContext.get()
    ctx.progress.update(1, 2)
    return {"text": f"Hello, {name}!", "request_id": ctx.request_id, "pid": os.getpid()}


@cls()
class Greeter:
    def __init__(self) -> None:
        self.greeting = "HELLO"  # once per container
        self.pid = os.getpid()

    @function()
    def shout(self, name: str) -> dict:
        ctx = RequestContext.get()
        return {
            "text": f"{self.greeting} {name.upper()}",
            "request_id": ctx.request_id,
            "pid": self.pid,
        }


@application(input_deserializer="json", output_serializer="json")
@function()
def fails(reason: str) -> str:
    return broken(reason)


@function()
def broken(reason: str) -> str:
    raise ValueError(reason)
