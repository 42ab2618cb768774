"""The worker's backoff: doubling per failure, capped, with a random half taken off."""

from __future__ import annotations

from patientkontrakt.notify.worker import backoff


def test_backoff_doubles_with_jitter_up_to_the_cap() -> None:
    for failures, full in ((1, 2.0), (2, 4.0), (3, 8.0), (6, 64.0), (10, 600.0), (200, 600.0)):
        waits = [backoff(failures, 2.0, 600.0) for _ in range(200)]
        assert all(full / 2 <= wait <= full for wait in waits), (failures, min(waits), max(waits))
        assert max(waits) - min(waits) > full / 10, "jitter spreads retries out"
