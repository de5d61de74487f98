"""File helpers shared by every layer: atomic writes, checksums, and undoing a failed command's writes.

This module imports nothing from the project, so envs, agents, imitation and analysis may all use
it.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path


def atomic_write(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` so that no reader ever sees a half-written file.

    The bytes go to a temporary file beside ``path`` (same folder, so the rename cannot cross file
    systems), are fsync'ed, then renamed over ``path``. Parent folders are created. Temporary files
    are named ``.NAME.*.tmp``: a caller that finds one after a crash may delete it. The file gets
    the permissions of any new file (0666 less the process's umask), as ``open`` would give it.
    An ``OSError`` names ``path``, never the temporary file.
    """
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = _create_temporary(path)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        if tmp is not None and os.path.lexists(tmp):
            os.unlink(tmp)
        if isinstance(err, OSError):
            named = type(err)(f"cannot write {path}: {err.strerror or err}")
            named.errno = err.errno  # kept for callers that test it; the message stays one line
            raise named from None
        raise


def _create_temporary(path: Path) -> tuple[int, str]:
    """A new file ``.NAME.XXXXXXXX.tmp`` beside ``path``, opened for writing.

    Not ``tempfile.mkstemp``: it creates files 0600 whatever the umask, so a GIF or exported weights
    would be unreadable to the people a 0644 (or 0640) umask shares outputs with.
    """
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NOFOLLOW", 0)
    for _ in range(100):
        tmp = str(path.parent / f".{path.name}.{os.urandom(4).hex()}.tmp")
        try:
            return os.open(tmp, flags, 0o666), tmp  # the kernel applies the umask
        except FileExistsError:
            continue
    raise FileExistsError(f"no free temporary name beside {path}")


def sha256_file(path: str | os.PathLike) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def first_missing(path: str | os.PathLike) -> Path | None:
    """The outermost folder of ``path`` (``path`` included) that does not exist yet; None if it exists."""
    path = Path(path).absolute()
    missing = None
    for p in (path, *path.parents):
        if os.path.lexists(p):
            break
        missing = p
    return missing


@contextmanager
def undo_on_failure(folder: str | os.PathLike, keep: Callable[[Path], bool] | None = None) -> Iterator[Path]:
    """Leave nothing behind if the body fails (an exception or Ctrl-C): what it added to ``folder``
    is removed again.

    If ``folder`` (or some of its parents) did not exist, the outermost folder created is removed
    with everything in it; otherwise the entries added to ``folder`` are. ``keep(entry)`` true keeps
    an added entry, such as a checkpoint or a shard a re-run resumes from (then the folders
    leading to it stay too). Entries that existed before are never touched.
    """
    folder = Path(folder)
    created = first_missing(folder)
    before = set(os.listdir(folder)) if created is None and folder.is_dir() else set()
    try:
        yield folder
    except BaseException:
        kept = False
        if folder.is_dir() and not folder.is_symlink():
            for name in sorted(set(os.listdir(folder)) - before):
                entry = folder / name
                if keep is not None and keep(entry):
                    kept = True
                else:
                    _remove(entry)
        if created is not None and not kept:
            _remove(created)
        raise


def _remove(path: Path) -> None:
    """Delete a file, a link or a folder tree (never following a link out of it)."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    elif os.path.lexists(path):
        path.unlink()
