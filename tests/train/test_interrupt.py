"""Deferred SIGINT / SIGTERM: the first signal is a request, the second acts at once."""

import signal

import pytest

from bertjax.train import interrupt


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_first_signal_is_a_request_and_handlers_come_back(signum):
    before = signal.getsignal(signum)
    with interrupt.deferred_signals() as stop:
        assert not stop
        signal.raise_signal(signum)
        assert stop and stop.signum == signum
    assert signal.getsignal(signum) is before
    assert interrupt.Interrupted(7, signum).exit_status == 128 + signum


def test_second_sigint_interrupts_at_once():
    with pytest.raises(KeyboardInterrupt), interrupt.deferred_signals() as stop:
        signal.raise_signal(signal.SIGINT)
        assert stop
        signal.raise_signal(signal.SIGINT)  # the default handler: KeyboardInterrupt
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
