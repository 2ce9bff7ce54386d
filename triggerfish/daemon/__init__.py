"""The daemon: the engine behind an HTTP API with API keys, and the ``triggerfish`` CLI."""
