"""What a test needs from the machine, and what happens when it is not there.

Under CI (`CI=true`; `.ci/run` installs every tool the tests need) a missing tool fails the
test: a skip there would hide a broken setup, and a check that never ran would read as a
pass. Elsewhere it skips and says how to get the tool.
"""

from __future__ import annotations

import os
import shutil
from typing import NoReturn

import pytest


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() == "true"


def missing(what: str, how_to_get_it: str) -> NoReturn:
    """Fail under CI, skip elsewhere, saying what is missing and how to get it."""
    message = f"{what} not found: {how_to_get_it}"
    if in_ci():
        pytest.fail(f"{message} (CI=true, so this fails instead of skipping)")
    pytest.skip(message)


def tool(name: str, how_to_get_it: str) -> str:
    """The path of the executable `name` on PATH; `missing` when there is none."""
    return shutil.which(name) or missing(name, how_to_get_it)
