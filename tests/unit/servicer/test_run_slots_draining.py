"""Run slots at the start of a shutdown: a run is either waited for or refused, never cut off."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from videodag_client import Unavailable, VideodagClient
from videodag_service.call_slots import RunSlots, RunTurn
from videodag_service.dag import DagPipelineService
from videodag_service.errors import ServerDraining
from videodag_service.server import start_server
from videodag_service.server_arguments import settings_from


def test_a_run_taking_its_slot_as_the_drain_begins_is_refused_not_left_without_grace() -> None:
    """Checked before the slot only, a run whose handler thread was descheduled between the two
    went on after a drain that had found no run to wait for: its grace was over before its
    first frame, and it ended UNAVAILABLE "the server shut down before the run ended"."""
    slots = RunSlots(2)
    join = slots._join

    def join_as_the_drain_begins(context: Any) -> RunTurn:
        slots.start_draining()
        assert slots.wait_until_idle(0), "the drain finds no run to wait for"
        return join(context)

    slots._join = join_as_the_drain_begins  # type: ignore[method-assign]
    ran = False
    with pytest.raises(ServerDraining), slots.hold():
        ran = True
    assert not ran
    assert slots.active == 0, "the slot is given back"


def test_a_run_holding_its_slot_before_the_drain_is_waited_for() -> None:
    slots = RunSlots(2)
    with slots.hold():
        slots.start_draining()
        assert not slots.wait_until_idle(0)
    assert slots.wait_until_idle(0)


def test_a_job_upload_taking_its_slot_as_the_drain_begins_is_refused(tmp_path: Path, make_video: Any) -> None:
    """As for runs: the upload went on after a drain that had found none to wait for, and was
    cut off by the server's stop (a bare UNAVAILABLE) partway."""
    settings = settings_from(["--port", "0", "--temp-dir", str(tmp_path / "t"), "--data-dir", str(tmp_path / "d")], {})
    running = start_server(settings, DagPipelineService.from_folder())
    try:
        slots = running.servicer._job_upload_slots
        take = slots._take

        def take_as_the_drain_begins() -> None:
            running.run_slots.start_draining()
            assert slots.wait_until_idle(0), "the drain finds no upload to wait for"
            take()

        slots._take = take_as_the_drain_begins  # type: ignore[method-assign]
        with VideodagClient(f"127.0.0.1:{running.port}") as client:
            with pytest.raises(Unavailable) as refused:
                client.submit_job(make_video(3), "frame_stats_v1")
            assert refused.value.reason == "SERVER_DRAINING"
            assert not client.list_jobs().jobs
        assert slots.active == 0
    finally:
        running.stop(0)

