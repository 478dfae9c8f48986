"""``python -m reason``: the same as the ``reason`` command."""

from reason.cli import main

main()
