"""The local Hub (seg_zoo.testing) of the Hub I/O tests: one per test module, skipped with the reason when olah is
not installed."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import pytest

from seg_zoo.testing import LocalHub, OlahNotFoundError, local_hub


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalHub]:
    with contextlib.ExitStack() as stack:
        try:
            started = stack.enter_context(local_hub(tmp_path_factory.mktemp("local-hub")))
        except OlahNotFoundError as error:
            pytest.skip(f"olah-cli is not installed, so the local Hub cannot start: {error}")
        yield started
