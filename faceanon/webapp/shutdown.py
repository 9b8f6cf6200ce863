"""Stopping the server without leaving anyone in the dark.

SIGTERM (docker stop, systemd, Kubernetes, a Space restart) starts a drain instead of dropping every
connection at once (which gives a Gradio client a CancelledError with no text, and a page a spinner
that never ends):

1. new work is refused with a message that says why and what to do;
2. jobs in flight get `grace` seconds to finish and send their results as usual;
3. jobs still running then stop at their next progress point (a frame, a denoising step) with a
   message, so each client learns what happened in words;
4. once no job has run for a moment (the messages are on their way), the server closes and deletes
   its temp folder as at Ctrl-C.

A second SIGTERM, or Ctrl-C, stops at once. SIGKILL, a crash or a power cut cannot be answered by
the server: there the client's call ends without text (see the README's client section).
"""

from __future__ import annotations

import functools
import logging
import threading
import time

from faceanon.webapp.limits import user_error

log = logging.getLogger(__name__)

TITLE = "Server shutting down"
REFUSED = (
    "This server is shutting down (a restart or an update) and takes no new work. "
    "Nothing you sent was kept. Send it again in a minute, once the server is back."
)
STOPPED = (
    "This server is shutting down (a restart or an update) and stopped your request before it "
    "finished. Nothing you sent was kept. Send it again in a minute, once the server is back."
)


class Jobs:
    """The server's jobs in flight: counted, refused while draining, stopped when the grace ends.

    Endpoints are wrapped with `endpoint`; long work calls `check()` at each progress point (the
    handlers' progress callback does), which is where a job is stopped.
    """

    def __init__(self):
        self._changed = threading.Condition()
        self._running = 0
        self._last_change = time.monotonic()
        self.draining = False
        self._stopping = False

    @property
    def running(self) -> int:
        with self._changed:
            return self._running

    def endpoint(self, fn):
        """Wraps an endpoint: refused while draining, counted while it runs. functools.wraps keeps
        the signature (Gradio finds gr.Progress through it) and the docstring (the API docs)."""

        @functools.wraps(fn)
        def run(*args, **kwargs):
            with self._changed:
                if self.draining:
                    self._last_change = time.monotonic()  # its message is on its way too
                    raise user_error(REFUSED, title=TITLE, duration=None)
                self._count(+1)
            try:
                return fn(*args, **kwargs)
            finally:
                with self._changed:
                    self._count(-1)

        return run

    def check(self) -> None:
        """Raises the "stopped" message once the drain's grace is over (call it at progress points)."""
        if self._stopping:
            raise user_error(STOPPED, title=TITLE, duration=None)

    def drain(self, grace: float, stop_wait: float = 5.0, quiet: float = 1.0) -> int:
        """Refuses new work, lets jobs finish for `grace` s, then stops the rest (waiting at most
        `stop_wait` s for them to reach a progress point). Returns once no job has run for `quiet`
        s (so their last messages are sent), or when the waits are over; the jobs still running."""
        with self._changed:
            self.draining = True
            if not self._changed.wait_for(lambda: self._running == 0, timeout=max(0.0, grace)):
                log.warning("%d job(s) still running after %g s; stopping them", self._running, grace)
                self._stopping = True
            deadline = time.monotonic() + stop_wait
            while True:  # until idle for `quiet` s (a refused or stopped job's message is sent)
                now = time.monotonic()
                idle_for = now - self._last_change if self._running == 0 else 0.0
                if idle_for >= quiet or now >= deadline:
                    break
                self._changed.wait(timeout=min(deadline - now, quiet - idle_for))
            if self._running:
                log.warning("%d job(s) did not stop within %g s", self._running, stop_wait)
            return self._running

    def _count(self, change: int) -> None:
        self._running += change
        self._last_change = time.monotonic()
        self._changed.notify_all()


JOBS = Jobs()  # one per server process
