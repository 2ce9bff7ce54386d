"""``python -m triggerfish``: the ``triggerfish`` command."""

from triggerfish.daemon.cli import main

main()
