"""Database backends, the app under test and its tokens.

Every database test runs twice: on the embedded SQLite default and on PostgreSQL. Each
backend is migrated once per session; each test starts from empty tables. Under CI=true a
PostgreSQL that cannot be reached fails the run instead of skipping.
"""

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, create_engine, make_url
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from app.core import migrate
from app.core.config import Settings
from app.core.db import create_db_engine
from app.main import create_app
from app.tokens.service import create_token
from tests.support import (
    CLUSTER,
    DEFAULT_NOW,
    SettableClock,
    drop_all_postgres,
    ensure_postgres_database,
    reset_database,
    skip_or_fail,
)


def postgres_url(url: str, suffix: str) -> str:
    """`url` naming the database with `suffix` added (the query string, if any, kept)."""
    parsed = make_url(url)
    return parsed.set(database=f"{parsed.database}{suffix}").render_as_string(hide_password=False)


# Each pytest-xdist worker gets a database of its own (gpucost_test_gw0, ...).
POSTGRES_URL = postgres_url(
    os.environ.get(
        "GPUCOST_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/gpucost_test"
    ),
    f"_{os.environ['PYTEST_XDIST_WORKER']}" if "PYTEST_XDIST_WORKER" in os.environ else "",
)
BACKENDS = ["sqlite", "postgresql"]


def postgres_or_skip(url: str) -> None:
    try:
        ensure_postgres_database(url)
    except OperationalError as exc:
        skip_or_fail(f"PostgreSQL unreachable at {url}: {str(exc.orig).splitlines()[0]}")


@pytest.fixture(scope="session")
def _migrated_urls(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    return {"sqlite": f"sqlite:///{tmp_path_factory.mktemp('db') / 'gpucost.db'}"}


@pytest.fixture(scope="session")
def _engines() -> Iterator[dict[str, Engine]]:
    engines: dict[str, Engine] = {}
    yield engines
    for engine in engines.values():
        engine.dispose()


@pytest.fixture(params=BACKENDS)
def db_url(
    request: pytest.FixtureRequest, _migrated_urls: dict[str, str], _engines: dict[str, Engine]
) -> Iterator[str]:
    """A migrated, empty database on each backend in turn."""
    backend = request.param
    if backend not in _engines:
        if backend == "postgresql":
            postgres_or_skip(POSTGRES_URL)
            drop_all_postgres(POSTGRES_URL)
            _migrated_urls[backend] = POSTGRES_URL
        settings = Settings(database_url=_migrated_urls[backend])
        _engines[backend] = create_db_engine(settings)
        migrate.upgrade(_engines[backend])
    yield _migrated_urls[backend]
    reset_database(_engines[backend])


@pytest.fixture
def backend(db_url: str) -> str:
    return "postgresql" if db_url.startswith("postgresql") else "sqlite"


@pytest.fixture
def settings(db_url: str) -> Settings:
    return Settings(database_url=db_url)


@pytest.fixture
def clock() -> SettableClock:
    return SettableClock(DEFAULT_NOW)


@pytest.fixture
def client(settings: Settings, clock: SettableClock) -> Iterator[TestClient]:
    with TestClient(create_app(settings, clock=clock)) as test_client:
        yield test_client


@pytest.fixture
def db(db_url: str) -> Iterator[Session]:
    """A session on the test database, for arranging and inspecting rows directly."""
    engine = create_engine(db_url)
    with Session(engine) as session:
        yield session
    engine.dispose()


def make_token(db_url: str, role: str, cluster: str | None = None, name: str | None = None) -> str:
    engine = create_engine(db_url)
    try:
        with Session(engine) as session, session.begin():
            _, clear = create_token(
                session, role=role, cluster=cluster, name=name, actor="test", now=DEFAULT_NOW
            )
    finally:
        engine.dispose()
    return clear


@pytest.fixture
def tokens(db_url: str) -> dict[str, str]:
    """Bearer headers for each role; the collector is bound to the default test cluster."""
    raw = {
        "admin": make_token(db_url, "admin", name="admin"),
        "viewer": make_token(db_url, "viewer", name="viewer"),
        "collector": make_token(db_url, "collector", CLUSTER, name="collector"),
    }
    return raw


@pytest.fixture
def auth(tokens: dict[str, str]) -> dict[str, dict[str, str]]:
    return {role: {"Authorization": f"Bearer {token}"} for role, token in tokens.items()}


@pytest.fixture
def log_dir(tmp_path: Path) -> Path:
    return tmp_path
