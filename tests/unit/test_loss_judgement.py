"""When a worker may declare its silent peers lost: only once its own heartbeats have
gone through for a whole LOST_AFTER_S, so that after a database outage the first
worker back does not take the others, not yet back, for lost."""

from __future__ import annotations

from node_runner.heartbeat import LossJudgement

LOST_AFTER_S = 15.0


def test_a_worker_that_just_started_waits_lost_after_s_before_judging():
    judgement = LossJudgement()
    assert not judgement.beat_succeeded(100.0, LOST_AFTER_S)
    assert not judgement.beat_succeeded(114.0, LOST_AFTER_S)
    assert judgement.beat_succeeded(115.0, LOST_AFTER_S)
    assert judgement.beat_succeeded(117.0, LOST_AFTER_S)


def test_a_failed_beat_starts_the_wait_again():
    judgement = LossJudgement()
    judgement.beat_succeeded(0.0, LOST_AFTER_S)
    assert judgement.beat_succeeded(20.0, LOST_AFTER_S)
    judgement.beat_failed()  # the database went away
    assert not judgement.beat_succeeded(60.0, LOST_AFTER_S), "the first beat back judges nobody"
    assert not judgement.beat_succeeded(70.0, LOST_AFTER_S)
    assert judgement.beat_succeeded(75.0, LOST_AFTER_S)
