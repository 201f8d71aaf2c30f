"""One fixture, `backend`, over every store driver: the contract suite runs each test on each.

    def test_x(backend: Backend) -> None:
        store = backend.open()          # a fresh, empty store (nothing created until first write)

The PostgreSQL param uses a fresh database per test on one throwaway server per session (the
`postgres` fixture's server, tests/deploy_world.py), skipped, saying why, only when no server
binary can be installed.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from lineage_platform.stores import Store, open_store
from tests.deploy_world import Postgres, postgres_server

DRIVERS = ["duckdb", "postgresql"]
_fresh = itertools.count()


@dataclass(frozen=True)
class Backend:
    """Where one fresh store lives; `open` gives as many handles to it as a test needs."""

    name: str
    url: str

    def open(self, lock_timeout_s: float = 10.0) -> Store:
        return open_store(self.url, lock_timeout_s=lock_timeout_s)


@pytest.fixture(scope="session")
def postgres_session() -> Iterator[Postgres]:
    """One throwaway server for the whole suite: starting one per test costs seconds each."""
    with postgres_server() as server:
        yield server


def _postgres_url(request: pytest.FixtureRequest) -> str:
    """A new, empty database on the shared throwaway server."""
    import psycopg  # the PostgreSQL driver's own client; missing -> the param fails, loudly

    server: Postgres = request.getfixturevalue("postgres_session")
    name = f"contract_{next(_fresh)}"
    base = f"postgresql://{server.user}:{server.password}@{server.host}:{server.port}"
    with psycopg.connect(f"{base}/{server.db_name}", autocommit=True) as con:
        con.execute(f'CREATE DATABASE "{name}"')
    return f"{base}/{name}"


@pytest.fixture(params=DRIVERS)
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    if request.param == "duckdb":
        yield Backend("duckdb", f"duckdb://{tmp_path / 'lineage.duckdb'}")
    else:
        yield Backend("postgresql", _postgres_url(request))
