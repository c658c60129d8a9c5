"""The recognition gate: bounded slots, and memory handed back when the last one ends."""

from __future__ import annotations

import threading

import pytest

from app.runtime.admission import Admission, Overloaded


def test_on_idle_runs_only_when_no_recognition_is_in_flight() -> None:
    calls: list[int] = []
    gate = Admission(2, 0.1, on_idle=lambda: calls.append(gate.in_flight))
    first_in, release_first = threading.Event(), threading.Event()

    def long_request() -> None:
        with gate.slot():
            first_in.set()
            release_first.wait(5)

    thread = threading.Thread(target=long_request)
    thread.start()
    assert first_in.wait(5)
    with gate.slot():
        assert gate.in_flight == 2
    gate.when_idle()
    assert calls == []  # another recognition is still running: nothing to trim yet
    release_first.set()
    thread.join(5)
    assert calls == [] and gate.in_flight == 0  # the slot's end does not trim ...
    gate.when_idle()
    assert calls == [0]  # ... the view asks once its answer is sent


def test_memory_is_returned_after_the_answer_is_sent(base_config: dict[str, str]) -> None:
    """malloc_trim added 5-12 ms to every answer when the slot's end ran it."""
    from app import create_app

    app = create_app(base_config)
    gate: Admission = app.extensions["admission"]
    calls: list[str] = []
    gate._on_idle = lambda: calls.append("trim")
    response = app.test_client().post("/infer", data=b"not an image",
                                      content_type="image/jpeg")
    assert response.status_code == 415 and calls == []  # refused inside its slot
    response.close()
    assert calls == ["trim"]


def test_full_gate_refuses_and_still_counts_right() -> None:
    gate = Admission(1, 0.05)
    with gate.slot(), pytest.raises(Overloaded), gate.slot():
        pass
    assert gate.in_flight == 0


def test_the_app_makes_one_gate_at_start_up(base_config: dict[str, str]) -> None:
    """Not lazily on the first requests (two of them could each make one)."""
    from app import create_app

    app = create_app({**base_config, "MAX_CONCURRENT_INFER": "3"})
    gate = app.extensions["admission"]
    assert isinstance(gate, Admission) and gate.slots == 3
    with app.test_request_context():
        from app.api.infer import _admission

        assert _admission() is gate
