"""Shared fixtures of the seg-retrieval tests."""

from __future__ import annotations

from collections.abc import Iterator

import faiss
import pytest


@pytest.fixture(autouse=True)
def one_faiss_thread() -> Iterator[None]:
    """One faiss OpenMP thread for the tests' tiny indexes, restored afterwards: on a busy 2-core machine the threads
    spin against each other (a tiny k-means took 3 s instead of 0.01 s)."""
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    yield
    faiss.omp_set_num_threads(before)
