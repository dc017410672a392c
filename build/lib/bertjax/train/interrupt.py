"""Clean interrupts: SIGINT (Ctrl-C) and SIGTERM end a run at a step it has saved.

Why: Ctrl-C used to print a 30-line KeyboardInterrupt traceback and lose up to
`checkpoint.every_steps - 1` steps. Inside `deferred_signals()` the first signal
only raises a flag; the train loop reads it after each step, saves that step's
checkpoint and raises `Interrupted`, which the CLI prints as one line. A second
signal acts at once (the previous handler), for a step that never ends. A signal that
arrives after the last step's check (during the final evaluation or export, or in a
run with no steps) is not lost: once the block has finished, it goes to the previous
handler (Ctrl-C: KeyboardInterrupt; SIGTERM: its default, ending the process).
"""

import contextlib
import signal
import threading
from collections.abc import Iterator

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupted(KeyboardInterrupt):
    """A run stopped by a signal after saving the checkpoint of `step`."""

    def __init__(self, step: int, signum: int):
        self.step, self.signum = step, signum
        super().__init__(f"interrupted at step {step}; re-run the same command to resume")

    @property
    def exit_status(self) -> int:
        """128 + the signal number, as shells report a process ended by that signal."""
        return 128 + self.signum


class StopRequest:
    """Truthy once a signal arrived; `signum` says which."""

    def __init__(self):
        self.signum: int | None = None

    def __bool__(self) -> bool:
        return self.signum is not None


@contextlib.contextmanager
def deferred_signals(signals: tuple[int, ...] = SIGNALS) -> Iterator[StopRequest]:
    """Within the block, the first of `signals` sets the yielded `StopRequest`; a second
    one goes to the handler that was there before. Outside the main thread (where
    Python cannot install handlers) signals keep their handlers and the request
    stays False."""
    request = StopRequest()
    if threading.current_thread() is not threading.main_thread():
        yield request
        return
    # getsignal is None for a handler installed outside Python: restore the default then.
    previous = {signum: signal.getsignal(signum) or signal.SIG_DFL for signum in signals}

    def handle(signum, frame):
        if request:  # the second signal: what it would have done without us
            signal.signal(signum, previous[signum])
            signal.raise_signal(signum)
            return
        request.signum = signum

    for signum in signals:
        signal.signal(signum, handle)
    finished = False
    try:
        yield request
        finished = True
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    if finished and request:  # nobody acted on it: it acts now, the block's work done
        signal.raise_signal(request.signum)
