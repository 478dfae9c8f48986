"""Faults to provoke on purpose (not mocks): a grade function that hangs on one input, for the
verifier's timeout, and a ``reason eval`` process that dies by SIGKILL at a chosen record, for resume."""

from __future__ import annotations

import os
import signal
import time
from typing import Any

from rewards.graders import grade_math


def hang_on_marker(response: str, reference: str) -> float:
    if "HANG" in response:
        while True:
            time.sleep(1)
    return grade_math(response, reference)


def eval_killed_after(records: int) -> None:
    """Run ``reason eval`` with this process's argv, SIGKILLing the process as soon as the
    ``records``-th new record has been handed on, i.e. after it was written, flushed and fsynced.

    The crash point is fixed by the records written, not by how fast the machine is, so a test can
    assert exactly what the file holds at the kill."""
    from reason.cli import eval as eval_command
    from reason.cli import main

    real = eval_command.evaluate

    def evaluate(*args: Any, on_record: Any = None, **kwargs: Any) -> Any:
        seen = 0

        def counted(record: Any) -> None:
            nonlocal seen
            if on_record is not None:
                on_record(record)
            seen += 1
            if seen == records:
                os.kill(os.getpid(), signal.SIGKILL)

        return real(*args, on_record=counted, **kwargs)

    eval_command.evaluate = evaluate  # what `reason eval` calls
    main()
