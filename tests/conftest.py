"""Shared fixtures: repo paths, the shared datasets, the loopback PostgreSQL of `make test`."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SOURCES = ROOT / "configs" / "sources"
DATASETS = ROOT.parent / "shared" / "datasets"


@pytest.fixture(scope="session")
def pg_url() -> str:
    """URL of the real PostgreSQL that `make test` starts (.ci/postgres.sh)."""
    url = os.environ.get("RETENTION_TEST_PG_URL")
    if not url:
        pytest.fail("RETENTION_TEST_PG_URL is not set: run `make test`, or export the URL that "
                    "`bash .ci/postgres.sh` prints")
    return url


@pytest.fixture(scope="session")
def datasets() -> Path:
    if not DATASETS.is_dir():
        pytest.fail(f"{DATASETS} not found: the shared datasets sit beside the project checkout")
    return DATASETS


@pytest.fixture(scope="session")
def redis_url() -> str:
    """URL of the real Redis that `make test` starts (.ci/redis.sh)."""
    url = os.environ.get("RETENTION_TEST_REDIS_URL")
    if not url:
        pytest.fail("RETENTION_TEST_REDIS_URL is not set: run `make test`, or export the URL "
                    "that `bash .ci/redis.sh` prints")
    return url
