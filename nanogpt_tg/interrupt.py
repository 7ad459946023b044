"""Ctrl-C and SIGTERM: from a command's first line a signal ends it with one line and status 130, never silently.
In training, once there is something to save, the first one stops at the end of the current step or eval batch with a
checkpoint; a second one always quits at once."""
import os
import signal
import sys
import threading

SIGNALS = (signal.SIGINT, signal.SIGTERM)
EXIT_STATUS = 130  # a shell's status for Ctrl-C; SIGTERM too, so that a script sees one status for "stopped"
catching = False  # set by cli.run: from there on a Stopped exception ends in its one line


class Stopped(KeyboardInterrupt):
    """A signal stopped the command where there was nothing to save; str() is the line to print."""


def flush():
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed or broken stream: the exit matters more
            pass


def quit_now(message: str):
    """Print message and exit 130 at once. No cleanup runs: the shutdown of tinygrad's compile workers can hang, and
    a checkpoint is only ever replaced whole (checkpoint.py), so nothing saved can be half written. The workers are
    killed, not left to finish their task."""
    if "multiprocessing" in sys.modules:
        for child in sys.modules["multiprocessing"].active_children():
            child.kill()
    flusher = threading.Thread(target=flush, daemon=True)  # from another thread: a print may hold the stream's lock
    flusher.start()
    flusher.join(timeout=1.0)
    os.write(2, f"\n{message}\n".encode())
    os._exit(EXIT_STATUS)


def watch(fd: int):
    """Quit at the second signal even while the main thread is inside one long C call (a jitted step on the CPU is
    one), where Python's handlers wait for it to return: Python's C-level handler writes each signal's number to fd
    at once, and this thread, blocked on reading it, counts them."""
    seen = 0
    while True:
        for signum in os.read(fd, 64):
            seen += 1
            if seen >= 2:
                quit_now(f"{signal.Signals(signum).name} again: quit at once, without saving")


def again(signum, frame):
    quit_now(f"{signal.Signals(signum).name} again: quit at once, without saving")


def stop(signum, frame, note: str = ""):
    """The command's handler until a training loop takes over: nothing to save yet, so stop here."""
    for s in SIGNALS:
        signal.signal(s, again)
    message = f"stopped by {signal.Signals(signum).name}" + (f"; {note}" if note else "")
    if not catching:  # still importing: an exception here would end in a traceback
        quit_now(message)
    raise Stopped(message)


def install(note: str = ""):
    """Called first by each command, before the heavy imports (which take seconds, and a cold compile more); note is
    said after `stopped by SIGINT` (train.py: "nothing to save yet")."""
    for s in SIGNALS:
        signal.signal(s, lambda signum, frame: stop(signum, frame, note))
    read, write = os.pipe()
    os.set_blocking(write, False)
    signal.set_wakeup_fd(write, warn_on_full_buffer=False)
    threading.Thread(target=watch, args=(read,), daemon=True, name="second signal").start()
    # after a quit at once multiprocessing's resource tracker removes the semaphores of tinygrad's compile workers, as
    # it should, and warns that they leaked; the processes it starts from here on take this filter from the command
    sys.warnoptions.append("ignore::UserWarning:multiprocessing.resource_tracker")


class Interrupt:
    """The training loop's handler. Until `armed` (the first step is done) there is nothing new to save and a signal
    stops at once, a cold compile included; once armed the first signal sets `requested` and the loop saves a
    checkpoint after the current step or eval batch. A second signal quits at once."""

    def __init__(self, unarmed_note: str = "nothing to save yet"):
        self.requested, self.armed, self.unarmed_note = None, False, unarmed_note

    def __enter__(self):
        self.previous = {s: signal.signal(s, self.handle) for s in SIGNALS}
        return self

    def handle(self, signum, frame):
        name = signal.Signals(signum).name
        if self.requested is not None:
            again(signum, frame)
        self.requested = name
        if not self.armed:
            raise Stopped(f"stopped by {name}; {self.unarmed_note}")
        print(f"\n{name}: saving a checkpoint after this step (press Ctrl-C again to quit without saving)", flush=True)

    def __exit__(self, *exc):
        if self.requested is None:  # while a signal is handled, a second one must still quit at once
            for s, handler in self.previous.items():
                signal.signal(s, handler)
