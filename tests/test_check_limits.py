"""check.time_limit stops slow code at its limit; check.torch_calls tells a Python loop from
vectorized code."""

from __future__ import annotations

import signal
import threading
import time

import pytest
import torch

from dlcourse import check


def test_time_limit_stops_a_busy_loop_at_its_limit():
    start = time.monotonic()
    with pytest.raises(check.CheckError, match=r"^spin: stopped after 0.3 s, its time limit: vectorize it$"):
        with check.time_limit(0.3, name="spin", hint="vectorize it"):
            while True:
                pass
    assert 0.3 <= time.monotonic() - start < 2


def test_time_limit_lets_fast_code_through_and_puts_the_handler_back():
    handler = signal.getsignal(signal.SIGALRM)
    with check.time_limit(5):
        x = sum(range(1000))
    assert x == 499500
    assert signal.getsignal(signal.SIGALRM) is handler


def test_time_limit_gives_an_outer_timer_back_its_time():
    fired = []
    previous = signal.signal(signal.SIGALRM, lambda *_: fired.append(time.monotonic()))
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.6)
        start = time.monotonic()
        with check.time_limit(5):
            time.sleep(0.1)
        left = signal.getitimer(signal.ITIMER_REAL)[0]
        assert 0.3 < left <= 0.5
        time.sleep(0.7)
        assert len(fired) == 1 and 0.5 < fired[0] - start < 1.0
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def test_time_limit_off_the_main_thread_checks_the_time_after():
    errors = []

    def work():
        try:
            with check.time_limit(0.05, name="sleep"):
                time.sleep(0.2)
        except check.CheckError as error:
            errors.append(str(error))

    thread = threading.Thread(target=work)
    thread.start()
    thread.join()
    assert errors == ["sleep: stopped after 0.05 s, its time limit"]


@pytest.mark.parametrize("seconds", [0, -1, "10", True, float("nan")])
def test_time_limit_refuses_a_limit_that_is_not_a_positive_number(seconds):
    with pytest.raises(ValueError, match="expected a positive number of seconds"):
        with check.time_limit(seconds):
            pass


def test_torch_calls_grow_with_a_python_loop_and_not_with_vectorized_code():
    def loop(x):
        y = torch.zeros_like(x)
        for i in range(x.shape[0]):
            y[i] = x[i] * 2
        return y

    def vectorized(x):
        return x * 2

    small, large = torch.ones(3), torch.ones(30)
    out, calls = check.torch_calls(loop, large)
    assert torch.equal(out, 2 * large)
    assert check.torch_calls(loop, small)[1] < calls
    assert check.torch_calls(vectorized, small)[1] == check.torch_calls(vectorized, large)[1] == 1
