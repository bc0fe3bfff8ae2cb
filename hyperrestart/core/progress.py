"""No silent waits: a heartbeat that says what is going on whenever a few seconds pass with nothing printed."""
import contextlib
import sys
import threading
import time

QUIET_LIMIT = 5.0  # seconds of silence the user may see at most


class Heartbeat:
    """Calls `say(elapsed seconds)` every `every` seconds in which nothing else was shown (call touch() after
    showing something); a daemon thread, stopped on exit."""

    def __init__(self, say, every=None):
        self.say, self.every = say, QUIET_LIMIT - 1 if every is None else every
        self.started = self.last = time.monotonic()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def touch(self):
        self.last = time.monotonic()

    def _loop(self):
        while not self._stop.wait(0.25):
            now = time.monotonic()
            if now - self.last >= self.every:
                self.say(now - self.started)
                self.last = now

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


@contextlib.contextmanager
def announce(what, detail="", stream=None):
    """Print `what (detail) ...` now, `  still what (Ns)` while it lasts, and `what: done in Ns` at the end
    (on stderr)."""
    stream = stream or sys.stderr
    print(f"{what}{f' ({detail})' if detail else ''} ...", file=stream, flush=True)
    with Heartbeat(lambda t: print(f"  still {what} ({t:.0f}s)", file=stream, flush=True)) as beat:
        yield beat
    print(f"{what}: done in {time.monotonic() - beat.started:.0f}s", file=stream, flush=True)
