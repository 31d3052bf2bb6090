"""Self-test of the real PostgreSQL server fixture."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

pytestmark = pytest.mark.postgres


def test_fresh_database_answers_select_1(postgres_url: str) -> None:
    engine = sa.create_engine(postgres_url)
    try:
        with engine.connect() as conn:
            assert conn.execute(sa.text("select 1")).scalar_one() == 1
            assert conn.execute(sa.text("select count(*) from pg_stat_user_tables")).scalar() == 0
    finally:
        engine.dispose()


def test_each_test_gets_its_own_database(postgres_url: str) -> None:
    assert postgres_url.startswith("postgresql+psycopg://postgres@127.0.0.1:")
    assert postgres_url.rsplit("/", 1)[1].startswith("t")
