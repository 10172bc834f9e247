"""Ctrl-C and SIGTERM during training: the first asks the loop to stop after the current step (with
mini-batches; after the current epoch with full batch, its only step), a second one stops at once
(:func:`graceful_interrupts`)."""

import contextlib
import signal
import threading


class _InterruptFlag:
    """What the handler recorded: ``requested`` and ``signal_number`` (the signal that asked to stop)."""

    def __init__(self, second=None):
        self.requested = False
        self.signal_number = None     # SIGINT or SIGTERM
        self._second = second
        self._holding = False
        self._held = None             # a second signal that came while holding

    def stop_at_once(self, signum):
        """What a second signal does: ``second(signum)`` if given (MPI: stop every rank), else KeyboardInterrupt."""
        if self._second is not None:
            self._second(signum)
        raise KeyboardInterrupt

    @contextlib.contextmanager
    def holding(self):
        """While active a second signal waits: it takes effect when the block is done (a checkpoint write,
        milliseconds), so the write is never cut short and the stop it saves is not lost."""
        self._holding = True
        try:
            yield
        finally:
            self._holding = False
            held, self._held = self._held, None
        if held is not None:
            self.stop_at_once(held)


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)   # Ctrl-C, and a scheduler's preemption


@contextlib.contextmanager
def graceful_interrupts(reporter, second=None, unit="epoch"):
    """While active, the first SIGINT or SIGTERM only sets ``flag.requested`` (and
    ``flag.signal_number``) and notes that training stops after the current ``unit`` ("step" or
    "epoch"); a second one raises KeyboardInterrupt (see :meth:`_InterruptFlag.holding`).

    A signal that is *ignored* when this starts (``nohup``, or ``cmd &`` in a
    script, which start a job with SIGINT set to SIG_IGN) stays ignored: no
    handler is installed for it. Installed only in the main thread (signal
    handlers cannot be set elsewhere). The previous handlers are restored on exit.
    second: called with the signal number instead of raising KeyboardInterrupt on a second signal
    (under MPI one rank cannot abandon a step alone: it stops every rank at once).
    """
    flag = _InterruptFlag(second)
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return

    def handler(signum, frame):
        if flag.requested:
            if flag._holding:
                flag._held = signum
                return
            flag.stop_at_once(signum)
        flag.requested = True
        flag.signal_number = signum
        again = "press Ctrl-C again" if signum == signal.SIGINT else f"send {signal.Signals(signum).name} again"
        reporter.note(f"{'Interrupt' if signum == signal.SIGINT else signal.Signals(signum).name} received: "
                      f"stopping after the current {unit} ({again} to stop at once).")

    previous = {}
    for signum in STOP_SIGNALS:
        if signal.getsignal(signum) is not signal.SIG_IGN:
            previous[signum] = signal.signal(signum, handler)
    try:
        yield flag
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)
