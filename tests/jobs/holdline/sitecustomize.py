"""Test fault: a worker that stops for good right after publishing a chosen status line.

Put this folder first on ``PYTHONPATH`` of a real worker process and set
``RUNARCHIVE_TEST_HOLD_AFTER`` to a line prefix: the real ``StatusStream.publish`` is wrapped
(restic's way: wrap the real object, fail at a chosen point) so that after publishing the
first line with that prefix the job sleeps until it is killed. The test then knows exactly
where the job stands when it kills it: no timing involved.
"""

from __future__ import annotations

import os
import time

_PREFIX = os.environ.get("RUNARCHIVE_TEST_HOLD_AFTER")

if _PREFIX:
    from runarchive.jobs.stream import StatusStream

    _publish = StatusStream.publish

    def _publish_then_hold(self: StatusStream, line: str) -> bool:
        sent = _publish(self, line)
        if _PREFIX is not None and line.startswith(_PREFIX):
            while True:  # until SIGKILL
                time.sleep(1)
        return sent

    StatusStream.publish = _publish_then_hold  # type: ignore[method-assign]
