"""Every drill except the health ones runs with the replication heartbeat paused (see
heartbeat_pause.py): exact GTID positions and checksums are compared between members."""

from __future__ import annotations

import pytest
from heartbeat_pause import pause_heartbeat, resume_heartbeat


@pytest.fixture(autouse=True)
def quiet_primary(request):
    if request.module.__name__.endswith("test_replication_health"):
        yield
        return
    pause_heartbeat()
    yield
    resume_heartbeat()
