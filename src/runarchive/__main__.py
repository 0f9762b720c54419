"""``python -m runarchive``: the same as the ``runarchive`` command."""

from runarchive.cli import main

main()
