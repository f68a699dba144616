"""Broadcast fixtures: a frozen clock (10:00 in clinic A's New York), clinic A in scope."""

from __future__ import annotations

import datetime

import pytest
import time_machine

from accounts.tenancy import tenant_scope

NOW = datetime.datetime(2026, 12, 1, 15, 0, tzinfo=datetime.UTC)  # 10:00 EST: daytime for the clinic
TODAY = datetime.date(2026, 12, 1)
TOMORROW = TODAY + datetime.timedelta(days=1)
NIGHT_ZONE = "Etc/GMT-8"  # UTC+8: 23:00 there at NOW, inside quiet hours


@pytest.fixture(autouse=True)
def clock():
    with time_machine.travel(NOW, tick=False) as traveller:
        yield traveller


@pytest.fixture
def in_a(tenant_a):
    with tenant_scope(tenant_a):
        yield tenant_a
