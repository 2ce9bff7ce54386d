"""The engine: scheduler, runtimes, replicas, timeouts and retries. Imports no sdk or daemon."""
