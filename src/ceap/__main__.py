"""``python -m ceap``: the same as the ``ceap`` command."""

from ceap.cli import main

main()
