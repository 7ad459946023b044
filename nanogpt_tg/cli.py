"""Running a command: a user mistake ends in one line that says what to do, not a traceback from deep inside."""
import os
import sys

from . import interrupt
from .checkpoint import CheckpointError
from .config import ConfigError

USER_ERRORS = (ConfigError, CheckpointError, FileNotFoundError, ValueError, FloatingPointError, OSError, ImportError)


def run(fn, *args):
    """Call fn(*args); print a user error as `error: ...` and exit 1 (NANOGPT_TG_DEBUG=1 shows the traceback).
    A Ctrl-C or SIGTERM that stopped it (a training run after its save too) prints its line and exits 130."""
    interrupt.catching = True
    try:
        return fn(*args)
    except USER_ERRORS as e:
        if os.environ.get("NANOGPT_TG_DEBUG"):
            raise
        sys.exit(f"error: {e}")  # one line; NANOGPT_TG_DEBUG=1 re-raises for the traceback
    except KeyboardInterrupt as e:
        # quit_now, not sys.exit: at exit Python would wait for tinygrad's compile workers, which can hang
        interrupt.quit_now(str(e) if isinstance(e, interrupt.Stopped) else "interrupted")
    finally:  # any end but a signal's (quit_now does not return)
        interrupt.close_workers()  # now: in multiprocessing's finalizer at exit, tinygrad's compile workers can hang
