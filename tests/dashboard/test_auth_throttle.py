"""The login throttle's rules alone, on a clock the test moves: attempts in flight count, lockouts double up to the
longest, old failures stop counting, a success clears its account but not its address."""

import logging
import threading

import pytest

from dashboard.throttle import Attempt, LoginThrottle


@pytest.fixture
def clock():
    return [1000.0]


@pytest.fixture
def throttle(clock):
    return LoginThrottle(max_failures=3, max_failures_per_client=5, lockout_s=60, max_lockout_s=200,
                         clock=lambda: clock[0])


def fail(throttle, client="10.0.0.9", account="lead", way="form"):
    ticket = throttle.attempt(client, account, way)
    assert isinstance(ticket, Attempt), ticket
    throttle.settle(ticket, False)


def test_an_account_is_locked_after_its_failures_with_a_log_line(throttle, clock, caplog):
    caplog.set_level(logging.WARNING, "dashboard.auth")
    for _ in range(3):
        fail(throttle)
    assert throttle.attempt("10.0.0.9", "lead", "form") == 60
    assert throttle.attempt("10.0.0.7", "lead", "basic") == 60  # from anywhere
    assert isinstance(throttle.attempt("10.0.0.9", "admin", "form"), Attempt)  # another account is not locked
    assert caplog.messages == ["dashboard: account lead locked for 60 s after 3 failed logins from 10.0.0.9 (form)"]
    clock[0] += 60
    assert isinstance(throttle.attempt("10.0.0.9", "lead", "form"), Attempt)


def test_each_further_lockout_doubles_up_to_the_longest(throttle, clock):
    periods = []
    for _ in range(4):
        for _ in range(3):
            fail(throttle, client=f"10.0.1.{len(periods)}")
        periods.append(throttle.attempt("10.0.2.1", "lead", "form"))
        clock[0] += periods[-1]
    assert periods == [60, 120, 200, 200]


def test_attempts_in_flight_count_so_parallel_guessers_get_no_more_tries(throttle):
    tickets = [throttle.attempt("10.0.0.9", "lead", "basic") for _ in range(10)]
    assert sum(isinstance(t, Attempt) for t in tickets) == 3
    assert all(t == 1.0 for t in tickets[3:])  # wait for the outcome of those in flight
    for t in tickets[:3]:
        throttle.settle(t, False)
    assert throttle.attempt("10.0.0.9", "lead", "basic") == 60


def test_many_threads_guessing_at_once_get_the_limit_and_no_more(throttle):
    accepted = []

    def guess():
        for _ in range(20):
            ticket = throttle.attempt("10.0.0.9", "lead", "basic")
            if isinstance(ticket, Attempt):
                accepted.append(ticket)
                throttle.settle(ticket, False)

    threads = [threading.Thread(target=guess) for _ in range(50)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert len(accepted) == 3


def test_a_client_guessing_many_accounts_is_locked_with_every_way_it_tried(throttle, clock, caplog):
    caplog.set_level(logging.WARNING, "dashboard.auth")
    for i in range(5):
        fail(throttle, account=f"user-{i}", way="basic" if i % 2 else "feed-token")
    assert throttle.attempt("10.0.0.9", "someone", "form") == 60
    assert throttle.attempt("10.0.0.9", None, "kiosk-token") == 60
    assert isinstance(throttle.attempt("10.0.0.8", "someone", "form"), Attempt)
    assert "dashboard: client 10.0.0.9 locked for 60 s after 5 failed logins (basic, feed-token)" in caplog.messages


def test_a_success_clears_the_account_but_not_the_address(throttle):
    fail(throttle)
    fail(throttle)
    ok = throttle.attempt("10.0.0.9", "lead", "form")
    throttle.settle(ok, True)
    fail(throttle)
    fail(throttle)  # the account's second failure since the success, the address's fourth
    assert throttle.locked("10.0.0.9", "lead") == 0
    fail(throttle, account="other")
    assert throttle.locked("10.0.0.9") == 60


def test_failures_older_than_the_window_stop_counting(throttle, clock):
    fail(throttle)
    fail(throttle)
    clock[0] += 901
    fail(throttle)
    fail(throttle)
    assert isinstance(throttle.attempt("10.0.0.9", "lead", "form"), Attempt)
