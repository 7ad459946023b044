"""Writing files so that nothing is lost: atomic replaces through unique temporary files, and a lock on a run's out_dir.

Every file the package writes goes through here: a temporary file with a fresh random name beside its target, created
exclusively and never through a symlink, fsynced and renamed over the target, then the directory fsynced.
"""
import contextlib
import errno
import fcntl
import os
import secrets
from contextlib import contextmanager
from pathlib import Path

LOCK_NAME = ".lock"
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)


class LockedError(OSError):
    """Another process holds out_dir's lock: two runs writing one out_dir would overwrite each other's checkpoints."""


def not_a_file(path: str | Path) -> str:
    """Why path cannot be read as a file: "not found", "is a directory" or "is not a regular file" (a FIFO, a device)."""
    path = Path(path)
    return "is a directory" if path.is_dir() else "is not a regular file" if path.exists() else "not found"


def create_temp(path: str | Path) -> tuple[int, Path]:
    """A new, empty file beside path named .NAME.RANDOM.tmp, opened for writing: (fd, its path). Never follows a link."""
    path = Path(path)
    for _ in range(100):
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
        try:
            return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW, 0o644), tmp
        except FileExistsError:
            continue
    raise FileExistsError(errno.EEXIST, f"could not create a temporary file beside {path}")


def fsync_dir(path: str | Path):
    """fsync a directory, so that a rename into it is on disk (a no-op where directories cannot be opened)."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some file systems refuse fsync on a directory; the rename itself is still atomic
    finally:
        os.close(fd)


@contextmanager
def staged(paths: list[str | Path], marker: str | Path | None = None):
    """Write several files all or none: yields {path: binary file} of temporary files; on a clean exit each is fsynced
    and renamed over its path, on an exception none is. marker, one of paths, is the file readers check for: it is
    removed before the others are renamed and renamed last, so a crash between the renames leaves no marker."""
    paths = [Path(p) for p in paths]
    if marker is not None:
        paths.append(paths.pop(paths.index(Path(marker))))
    files, temps = {}, []
    try:
        for p in paths:
            fd, tmp = create_temp(p)
            temps.append(tmp)
            files[p] = open(fd, "wb")
        yield files
        for f in files.values():
            f.flush()
            os.fsync(f.fileno())
            f.close()
        if marker is not None:
            paths[-1].unlink(missing_ok=True)
        for p, tmp in zip(paths, temps):
            os.replace(tmp, p)
        for d in dict.fromkeys(p.parent for p in paths):
            fsync_dir(d)
    finally:
        for f in files.values():
            f.close()
        for tmp in temps:
            tmp.unlink(missing_ok=True)  # only the ones not renamed are still there


@contextmanager
def atomic_write(path: str | Path):
    """Yields a binary file; on a clean exit it replaces path whole, on an exception path is left as it was."""
    with staged([path]) as files:
        yield files[Path(path)]


def write_bytes(path: str | Path, data: bytes):
    """Replace path's contents with data, atomically."""
    with atomic_write(path) as f:
        f.write(data)


def write_text(path: str | Path, text: str):
    """Replace path's contents with text (UTF-8), atomically."""
    write_bytes(path, text.encode("utf-8"))


def open_nofollow(path: str | Path, flags: int) -> int:
    """os.open(path, flags) for writing, refusing a symlink at path with an error that says so."""
    try:
        return os.open(path, flags | _NOFOLLOW, 0o644)
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise OSError(errno.ELOOP, f"{path} is a symbolic link; nothing is written through one: remove it or "
                                       "choose another directory") from None
        raise


def check_writable(directory: str | Path):
    """Create directory if needed and prove a file can be created in it (an exclusive temporary file, removed)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    fd, tmp = create_temp(directory / "write_test")
    os.close(fd)
    tmp.unlink()


class DirLock:
    """An exclusive lock on a directory for one run: flock on DIR/.lock, which holds the owner's pid. The directory is
    made if missing; on release the lock file goes, and so do the directories made for it if the run left them empty.

    The kernel drops a flock when its process dies, so a killed run never leaves a stale lock behind."""

    def __init__(self, directory: str | Path):
        directory = Path(directory)
        self.made = [p for p in (directory, *directory.parents) if not p.exists()]  # deepest first
        directory.mkdir(parents=True, exist_ok=True)
        self.path = directory / LOCK_NAME
        while True:
            fd = open_nofollow(self.path, os.O_RDWR | os.O_CREAT)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "unknown"
                os.close(fd)
                raise LockedError(f"{directory} is in use by another training run (pid {holder}, holding {self.path}); "
                                  "wait for it to finish or choose another --out_dir") from None
            except OSError:  # a file system without locks, for one
                os.close(fd)
                raise
            # a holder removes the file as it lets go: a lock taken on the removed file would guard nothing
            with contextlib.suppress(FileNotFoundError):
                st, held = os.stat(self.path, follow_symlinks=False), os.fstat(fd)
                if (st.st_dev, st.st_ino) == (held.st_dev, held.st_ino):
                    break
            os.close(fd)
        self.fd = fd
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)

    def close(self):
        if self.fd is None:
            return
        self.path.unlink(missing_ok=True)  # while still held, so that no one locks the file being removed
        fcntl.flock(self.fd, fcntl.LOCK_UN)  # explicitly: a forked child (a compile worker) may share the descriptor
        os.close(self.fd)
        self.fd = None
        for p in self.made:
            with contextlib.suppress(OSError):  # not empty: the run wrote into it
                p.rmdir()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
