"""The service's limits: the campaign-log write budget and the admission headroom around a
hot reload."""

from __future__ import annotations

import pytest

from serving.limits import Rebuild, WriteBudget


def test_the_write_budget_refills_at_its_rate_and_never_exceeds_its_burst():
    now = [0.0]
    budget = WriteBudget(rate=100.0, burst=1000, clock=lambda: now[0])
    assert budget.take(1000) == 0.0
    assert budget.take(1) == pytest.approx(0.01)
    now[0] = 100.0  # a long pause refills to the burst, not beyond
    assert budget.take(1000) == 0.0 and budget.take(1) > 0


def test_admission_headroom_lasts_the_rebuild_and_a_grace_period():
    now = [0.0]
    rebuild = Rebuild(clock=lambda: now[0])
    assert rebuild.factor() == 1
    rebuild.start()
    now[0] = 30.0
    assert rebuild.factor() == Rebuild.HEADROOM
    rebuild.end()
    now[0] += Rebuild.GRACE_SECONDS - 0.1
    assert rebuild.factor() == Rebuild.HEADROOM
    now[0] += 0.2
    assert rebuild.factor() == 1
