"""``python -m runarchive.jobs worker …``: the jobs commands without the main CLI."""

from .commands import jobs_cli

jobs_cli()
