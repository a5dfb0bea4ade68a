"""Private folders beside the database (the staging folder, the model store) and the files read from them.

Both hold what a run reads back, so each is private to the user running the
flow (0700); one that is a symbolic link, not a folder, or another user's is
refused, and listings, deletions and renames go through the folder opened
without following links, so a swap of the path cannot redirect them.
"""

from __future__ import annotations

import os
import shutil
import stat
from collections.abc import Collection, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import BinaryIO

PRIVATE = 0o700  # the staging folder, the run folders and the model store: the flow's user only


def beside(db: str | Path, suffix: str) -> Path:
    """The path named after the database file plus ``suffix`` (its lock, staging folder, model store, reports),
    named after the file itself when ``db`` is a symbolic link to it: every name of one file then finds the
    same lock and the same models (a run through a link took a lock of its own beside the link, and a night
    through the file's own name did not find the models the link's run had stored)."""
    path = Path(db)
    return Path(f"{path.resolve() if path.is_symlink() else path}{suffix}")


def report_path(db: str | Path, run_id: str) -> Path:
    """Where the flow files a run's HTML report: beside the database, one file per run."""
    return beside(db, ".reports") / f"{run_id}.html"


def plain_name(name: str) -> bool:
    """Whether ``name`` (a model or run id read from the file) names a file of its own in a folder: a row edited
    to ``../..`` must not lead a removal out of the store."""
    return name not in ("", ".", "..") and os.sep not in name


# what pairwise keeps beside the database file, and why no output may go there
KEPT_BESIDE = {".wal": "the database's write-ahead log", ".lock": "the database's run lock",
               ".staging": "the database's staging folder, which every run clears",
               ".models": "the database's model store, which every run clears of all but models"}


def check_name_room(db: str | Path) -> None:
    """Refuse (ValueError, one line) a --db whose name leaves no room for the folders named after it: their
    names passed the file system's limit (255 bytes) and a run died with a traceback."""
    longest = max([*KEPT_BESIDE, ".reports"], key=len)
    folder = beside(db, longest)
    try:
        limit = os.pathconf(folder.parent, "PC_NAME_MAX")
    except (OSError, ValueError):  # a folder that does not exist yet
        limit = 255
    suffix = len(longest.encode())
    if (length := len(os.fsencode(folder.name))) > limit:
        raise ValueError(f"--db {db}: a file name of {length - suffix:,} bytes; at most {limit - suffix} fit, as a "
                         f"run keeps folders beside the file named after it (<name>{longest})")


def check_not_kept(path: str | Path, db: str | Path, option: str) -> None:
    """Refuse (ValueError) an output ``path`` that is the database file or one of the files and folders kept
    beside it, or lies in one: a report written there replaced the database itself, and an export there
    was deleted by the next run."""
    target = Path(path).resolve()
    kept = {Path(db).resolve(): "the database itself",
            **{beside(db, suffix).resolve(): what for suffix, what in KEPT_BESIDE.items()}}
    for own, what in kept.items():
        if target == own or own in target.parents:
            raise ValueError(f"{option}: {path} is {'' if target == own else 'inside '}{what}; choose another path")


def check_private(folder: Path, what: str) -> None:
    """Refuse (ValueError) ``folder`` if it is a symbolic link, not a folder, or another user's; ``what``
    names it in the message. A missing one is fine."""
    try:
        _check_folder(folder, os.lstat(folder), what)
    except FileNotFoundError:
        pass


def _check_folder(folder: Path, status: os.stat_result, what: str) -> None:
    if stat.S_ISLNK(status.st_mode):
        raise ValueError(f"{folder}: {what} is a symbolic link; refusing to use it (remove the link)")
    if not stat.S_ISDIR(status.st_mode):
        raise ValueError(f"{folder}: {what} is not a folder; refusing to use it")
    if status.st_uid != os.getuid():
        raise ValueError(f"{folder}: {what} belongs to uid {status.st_uid}, not to this user "
                         f"(uid {os.getuid()}); refusing to use it")


@contextmanager
def opened(folder: Path, what: str = "the staging folder") -> Iterator[int]:
    """``folder`` opened without following a link, checked as ``check_private`` does, and made private
    (0700) if it was looser: a descriptor to list, delete and rename relative to, which a swap of the path
    cannot redirect. FileNotFoundError if it is missing."""
    try:
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    except OSError as error:
        if not isinstance(error, FileNotFoundError):  # a link (ELOOP) or not a folder (ENOTDIR): say which
            _check_folder(folder, os.lstat(folder), what)
        raise
    try:
        status = os.fstat(fd)
        _check_folder(folder, status, what)
        if stat.S_IMODE(status.st_mode) != PRIVATE:
            os.fchmod(fd, PRIVATE)
        yield fd
    finally:
        os.close(fd)


def create_private(folder: Path) -> None:
    """Create ``folder`` private (0700); one that exists is left to ``opened`` to check and make private."""
    with suppress(FileExistsError):
        os.mkdir(folder, PRIVATE)


def clear(folder: Path, what: str, keep: Collection[str] = ()) -> None:
    """Delete what ``folder`` holds but the entries named in ``keep``, through the folder opened as
    ``opened`` does; a missing folder holds nothing."""
    try:
        with opened(folder, what) as fd:
            for name in sorted(os.listdir(fd)):
                if name not in keep:
                    remove_entry(fd, name)
    except FileNotFoundError:
        pass


def remove_entry(folder: int, name: str) -> None:
    """Delete ``name`` inside the opened ``folder``: a folder's tree (never following a link inside it:
    shutil's fd-based rmtree), or a file or link itself."""
    try:
        if stat.S_ISDIR(os.stat(name, dir_fd=folder, follow_symlinks=False).st_mode):
            shutil.rmtree(name, dir_fd=folder, ignore_errors=True)
        else:
            os.unlink(name, dir_fd=folder)
    except FileNotFoundError:
        pass


def open_own(path: str | Path) -> BinaryIO:
    """A staged or stored file opened for reading, refused unless this user owns it. The folders are
    private, but whoever can write the database's folder can rename one away and put their own in its
    place: a file they wrote there is theirs, and is never read (checked on the open file, so no later swap
    counts)."""
    handle = open(path, "rb")  # noqa: SIM115 (handed to the caller, who closes it)
    owner = os.fstat(handle.fileno()).st_uid
    if owner != os.getuid():
        handle.close()
        raise PermissionError(f"{path}: written by uid {owner}, not by this user (uid {os.getuid()}); "
                              "refusing to read it")
    return handle
