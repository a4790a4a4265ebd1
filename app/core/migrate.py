"""Running Alembic from gpucost itself, so no alembic.ini is needed anywhere."""

from datetime import UTC, datetime
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, inspect, text

import migrations
from app.core.partitions import ensure_partitions

VERSION_TABLE = "alembic_version"
SCRIPT_LOCATION = Path(migrations.__file__).parent
FILE_TEMPLATE = "%%(year)d_%%(month).2d_%%(day).2d_%%(hour).2d%%(minute).2d-%%(rev)s-%%(slug)s"


def alembic_config(engine: Engine) -> Config:
    config = Config()
    config.set_main_option("script_location", str(SCRIPT_LOCATION))
    config.set_main_option("file_template", FILE_TEMPLATE)
    # ConfigParser interpolates `%`: a URL's escapes (a password's `%40`, a socket's `%2F`)
    # are doubled to stay themselves.
    url = engine.url.render_as_string(hide_password=False)
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def _run(engine: Engine, action: str, revision: str) -> None:
    config = alembic_config(engine)
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        getattr(command, action)(config, revision)


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Bring the schema up to `revision` (the newest by default), with the partitions of
    raw usage for the months to come."""
    _run(engine, "upgrade", revision)
    with engine.begin() as connection:
        ensure_partitions(connection, datetime.now(UTC))


def downgrade(engine: Engine, revision: str) -> None:
    """Take the schema back down to `revision` (`base` removes every table)."""
    _run(engine, "downgrade", revision)


def head_revision() -> str | None:
    return ScriptDirectory(str(SCRIPT_LOCATION)).get_current_head()


def current_revision(engine: Engine) -> str | None:
    """The revision the database's schema is at; None before the first migration. (Read
    from Alembic's table directly: its MigrationContext logs two INFO lines a call, and
    /readyz asks every few seconds.)"""
    with engine.connect() as connection:
        if not inspect(connection).has_table(VERSION_TABLE):
            return None
        revision: str | None = connection.execute(
            text(f"SELECT version_num FROM {VERSION_TABLE}")
        ).scalar()
        return revision
