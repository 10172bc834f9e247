"""Ctrl-C and SIGTERM during training: the first asks the loop to stop after the current epoch,
a second one abandons the epoch at once (:func:`graceful_interrupts`)."""

import contextlib
import signal
import threading


class _InterruptFlag:
    requested = False
    signal_number = None     # the signal that asked to stop (SIGINT or SIGTERM)


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)   # Ctrl-C, and a scheduler's preemption


@contextlib.contextmanager
def graceful_interrupts(reporter, second=None):
    """While active, the first SIGINT or SIGTERM only sets ``flag.requested`` (and
    ``flag.signal_number``); a second one raises KeyboardInterrupt.

    A signal that is *ignored* when this starts (``nohup``, or ``cmd &`` in a
    script, which start a job with SIGINT set to SIG_IGN) stays ignored: no
    handler is installed for it. Installed only in the main thread (signal
    handlers cannot be set elsewhere). The previous handlers are restored on exit.
    second: called with the signal number instead of raising KeyboardInterrupt on a second signal
    (under MPI one rank cannot abandon a step alone: it stops every rank at once).
    """
    flag = _InterruptFlag()
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return

    def handler(signum, frame):
        if flag.requested:
            if second is not None:
                second(signum)
            raise KeyboardInterrupt
        flag.requested = True
        flag.signal_number = signum
        again = "press Ctrl-C again" if signum == signal.SIGINT else f"send {signal.Signals(signum).name} again"
        reporter.note(f"{'Interrupt' if signum == signal.SIGINT else signal.Signals(signum).name} received: "
                      f"stopping after the current epoch ({again} to stop at once).")

    previous = {}
    for signum in STOP_SIGNALS:
        if signal.getsignal(signum) is not signal.SIG_IGN:
            previous[signum] = signal.signal(signum, handler)
    try:
        yield flag
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)
