"""Shared fixtures: a real MariaDB server started from the mariadb-server package's own binary."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
# Custom modules import their logic as ansible.module_utils.*; tests import it directly.
sys.path.insert(0, str(REPO_ROOT))
sys.path.insert(0, str(REPO_ROOT / "module_utils"))

from tests.support.mariadb_instance import MariaDBInstance  # noqa: E402


@pytest.fixture(scope="session")
def mariadb_server():
    """One mariadbd for the whole session; tests isolate themselves with their own databases."""
    with MariaDBInstance() as server:
        yield server
