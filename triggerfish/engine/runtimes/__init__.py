"""Where replicas run: local processes (the default), later containers and Swarm."""
