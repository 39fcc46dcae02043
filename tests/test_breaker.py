from ringserve.server.breaker import Breaker


class Clock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


def test_opens_after_threshold_probes_after_reset_and_closes_on_success():
    clock = Clock()
    b = Breaker(failure_threshold=3, reset_seconds=2.0, clock=clock)
    for _ in range(2):
        assert b.allow()
        b.failure()
    assert b.state == "closed"
    b.failure()
    assert b.state == "open" and not b.allow()
    clock.t = 2.5
    assert b.state == "half-open"
    assert b.allow()  # one probe
    assert not b.allow()  # and only one
    b.failure()
    assert b.state == "open" and b.opens == 1
    clock.t = 5.0
    assert b.allow()
    b.success()
    assert b.state == "closed" and b.allow()


def test_success_resets_consecutive_count():
    b = Breaker(failure_threshold=2, reset_seconds=1.0, clock=Clock())
    b.failure()
    b.success()
    b.failure()
    assert b.state == "closed"
