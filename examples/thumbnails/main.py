"""An example codebase: a class whose __init__ runs once per replica, and its functions."""

import time


class ServiceRunner:
    def __init__(self, size: int) -> None:
        self.size = size  # load a model here: it stays loaded for every execution

    def thumbnail(self, item: dict) -> str:
        print(f"making a {self.size}px thumbnail of {item['id']}")
        return f"{item['id']}@{self.size}px.png"

    def heartbeat(self) -> str:
        return time.strftime("%H:%M:%S")
