"""A grade function that hangs on one input, to provoke the verifier's timeout (a fault, not a mock)."""

from __future__ import annotations

import time

from rewards.graders import grade_math


def hang_on_marker(response: str, reference: str) -> float:
    if "HANG" in response:
        while True:
            time.sleep(1)
    return grade_math(response, reference)
