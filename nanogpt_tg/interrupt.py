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
    """A signal stopped the command: there was nothing to save, or it is saved; str() is the line to print."""


def flush():
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed or broken stream: the exit matters more
            pass


def stop_pool(timeout: float) -> bool:
    """Terminate tinygrad's compile workers (a spawn Pool); whether that ended within timeout seconds. The terminate
    first stops the pool replacing dead workers (after a bare kill it starts new ones at once, and one still starting
    as the process goes prints an EOFError), then ends them in milliseconds; but it waits for ever once a SIGTERM to
    the process group (timeout, systemd, SLURM, kill -TERM -PGID; the workers ignore SIGINT only) has killed the idle
    worker holding its task queue's lock. It is left waiting in a daemon thread, the caller kills the workers, and
    multiprocessing's finalizer, the same wait at exit, is gone (the terminate ran it)."""
    tg = sys.modules.get("nanogpt_tg.tg")  # not imported: no model was built, so no kernel compiled and no pool
    terminate = tg.compile_pool_terminator() if tg is not None else None
    if terminate is None:
        return True
    ender = threading.Thread(target=terminate, daemon=True, name="stop compile workers")
    ender.start()
    ender.join(timeout)
    return not ender.is_alive()


def kill_children():
    """Kill the multiprocessing children (tinygrad's compile workers), not left to finish their task."""
    if "multiprocessing" in sys.modules:
        for child in sys.modules["multiprocessing"].active_children():
            child.kill()


def quit_now(message: str):
    """Print message and exit 130 at once. No cleanup runs: the shutdown of tinygrad's compile workers can hang
    (stop_pool), and a checkpoint is only ever replaced whole (checkpoint.py), so nothing saved can be half written.
    The workers are killed."""
    stop_pool(0.5)
    kill_children()
    flusher = threading.Thread(target=flush, daemon=True)  # from another thread: a print may hold the stream's lock
    flusher.start()
    flusher.join(timeout=1.0)
    os.write(2, f"\n{message}\n".encode())
    os._exit(EXIT_STATUS)


def close_workers():
    """End tinygrad's compile workers at the end of a command (cli.run), not in multiprocessing's finalizer at exit,
    which waits for them for ever if a signal killed one (stop_pool); a pool still stuck after 5 s is killed."""
    try:
        if not stop_pool(5.0):
            kill_children()
    except KeyboardInterrupt as e:  # a signal as they end: it quits, as anywhere else
        quit_now(str(e) if isinstance(e, Stopped) else "interrupted")


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
