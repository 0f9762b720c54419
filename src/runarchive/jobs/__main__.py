"""``python -m runarchive.jobs worker …``: the job commands without the rest of the CLI.

An entry point, not part of the jobs library: it runs the CLI's job commands (the one
exception the layers contract allows).
"""

from runarchive.cli.jobs_commands import jobs_cli

jobs_cli()
