"""Deferred SIGINT / SIGTERM: the first signal is a request, the second acts at once."""

import signal

import pytest

from bertjax.train import interrupt


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_first_signal_is_a_request_and_handlers_come_back(signum):
    seen = []

    def recorder(s, frame):
        seen.append(s)

    before = signal.signal(signum, recorder)
    try:
        with pytest.raises(interrupt.Interrupted), interrupt.deferred_signals() as stop:
            assert not stop
            signal.raise_signal(signum)
            assert stop and stop.signum == signum and not seen
            raise interrupt.Interrupted(7, stop.signum)  # what the loop does with it
        assert not seen  # acted on: not delivered again
        assert signal.getsignal(signum) is recorder  # the handler came back
        assert interrupt.Interrupted(7, signum).exit_status == 128 + signum
        # A request nobody acted on (it came after the last step) is delivered at the end.
        with interrupt.deferred_signals() as stop:
            signal.raise_signal(signum)
            assert stop and not seen
        assert seen == [signum]
    finally:
        signal.signal(signum, before)


def test_second_sigint_interrupts_at_once():
    with pytest.raises(KeyboardInterrupt), interrupt.deferred_signals() as stop:
        signal.raise_signal(signal.SIGINT)
        assert stop
        signal.raise_signal(signal.SIGINT)  # the default handler: KeyboardInterrupt
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
