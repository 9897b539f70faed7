"""Files written atomically, and digests of files and values.

Every file a run produces is written to a temporary name in the destination
folder and renamed into place, so a crash never leaves a half-written file
under its final name. Nothing here ever removes a folder standing where a file
is to be written: that is an error, never a deletion. A place that refuses the
write (full disk, quota, read-only, no permission) is an EdgepipeError naming
the file and the cause.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import shutil
import stat
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from edgepipe.errors import EdgepipeError

#: temporary files carry this marker, so a later command can sweep what a killed one left behind
TMP_MARKER = ".tmp"


#: errno values of a write the destination refuses: the place, not edgepipe, must change
NO_SPACE = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})
NOT_WRITABLE = frozenset({errno.EROFS, errno.EACCES, errno.EPERM})


def refused_write(exc: BaseException) -> OSError | None:
    """The OSError of a refused write (full, over quota, too large, read-only, no permission) that ``exc`` is
    or was raised from (writers such as Keras wrap it); None when ``exc`` is something else."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno in NO_SPACE | NOT_WRITABLE:
            return exc
        exc = exc.__cause__ or exc.__context__
    return None


def write_error(path: str | os.PathLike, exc: OSError) -> EdgepipeError:
    """One line for a write ``path``'s place refused: what, where, and how to get past it."""
    hint = "Free space or choose another --output." if exc.errno in NO_SPACE else "Choose a writable place (--output)."
    return EdgepipeError(f"cannot write {path}: {exc.strerror or exc}", hint)


def escapes(relative: str | os.PathLike) -> bool:
    """Whether a name meant to be relative to a folder is not one: absolute, climbing out with '..', or empty."""
    relative = Path(relative)
    return relative.is_absolute() or ".." in relative.parts or not relative.parts


def inside(root: str | os.PathLike, relative: str | os.PathLike) -> Path:
    """``root / relative``, promised to stay inside ``root``: refused with EdgepipeError when ``relative`` is
    absolute, climbs out with '..', or passes through a symbolic link (any existing part of it, the last
    included). ``root`` itself may be a link: it is the folder the user chose. Parts that do not exist yet
    are allowed (edgepipe creates them as real files and folders)."""
    root, relative = Path(root), Path(relative)
    if escapes(relative):
        raise EdgepipeError(
            f"'{relative}' is not a name inside {root}",
            "edgepipe reads and writes only inside the run directory; its records were edited.",
        )
    path = root
    for part in relative.parts:
        path = path / part
        try:
            mode = os.lstat(path).st_mode
        except (FileNotFoundError, NotADirectoryError):
            break
        if stat.S_ISLNK(mode):
            raise EdgepipeError(
                f"'{path}' is a symbolic link; edgepipe reads and writes only inside the run directory {root}",
                "Replace the link by the file or folder itself, or choose another --output.",
            )
    return root / relative


def _refuse_folder(final: Path) -> None:
    if final.is_dir() and not final.is_symlink():
        raise EdgepipeError(
            f"'{final}' is a folder, where edgepipe would write a file",
            "Choose another path; edgepipe never replaces a folder with a file.",
        )


def make_folder(path: Path) -> None:
    """mkdir -p, with a one-line error when a file stands in the way or the place is not writable."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise EdgepipeError(f"'{path}' is a file, where edgepipe needs a folder", "Choose another path.") from None
    except NotADirectoryError:
        raise EdgepipeError(
            f"a part of '{path}' is a file, where edgepipe needs a folder", "Choose another path."
        ) from None
    except OSError as exc:
        raise EdgepipeError(
            f"cannot create the folder '{path}' ({exc.strerror})", "Choose a writable place (--output)."
        ) from None


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it to ``path`` on success.

    On error the temporary is removed and ``path`` is left as it was. A folder
    standing at ``path`` is an error, never removed. ``suffix`` is kept on the
    temporary name for writers that insist on an extension (Keras' ``.keras``).
    """
    final = Path(path)
    make_folder(final.parent)
    _refuse_folder(final)
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=f".{final.name}.", suffix=f"{TMP_MARKER}{suffix}", dir=final.parent)
    except OSError as exc:
        raise write_error(final, exc) from None
    os.close(fd)
    os.unlink(tmp_name)
    tmp = Path(tmp_name)
    try:
        yield tmp
        _refuse_folder(final)
        os.replace(tmp, final)
    except Exception as exc:
        refused = refused_write(exc)
        if refused is None:
            raise
        raise write_error(final, refused) from None
    finally:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        elif tmp.exists():
            tmp.unlink()


def check_output_file(path: str | os.PathLike, owned: Callable[[Path], bool]) -> None:
    """Refuse an output file path edgepipe must not write: a folder, or an existing file that ``owned``
    does not recognise as one edgepipe wrote (edgepipe overwrites only its own files)."""
    path = Path(path)
    _refuse_folder(path)
    if path.parent.exists() and not path.parent.is_dir():
        raise EdgepipeError(f"'{path.parent}' is a file, where edgepipe needs a folder", "Choose another path.")
    if path.exists():
        try:
            ours = owned(path)
        except OSError:
            ours = False
        if not ours:
            raise EdgepipeError(
                f"'{path}' exists and is not a file edgepipe wrote; it is left as it is",
                "Choose another output path, or move that file away yourself.",
            )


def write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_text(path: str | os.PathLike, text: str) -> Path:
    return write_bytes(path, text.encode("utf-8"))


def link_file(source: str | os.PathLike, target: str | os.PathLike) -> None:
    """Make ``target`` (atomically) the same file as ``source``: a hard link, or a copy on a file system without
    them. For files never changed in place (written whole, then renamed), as edgepipe writes its own."""
    target = Path(target)
    with atomic_path(target, suffix=target.suffix) as tmp:
        try:
            os.link(source, tmp)
        except OSError:
            shutil.copyfile(source, tmp)


def _json_default(value: Any) -> Any:
    import numpy as np

    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot serialise {type(value).__name__} to JSON")


def dumps_json(data: Any) -> str:
    return json.dumps(data, indent=2, sort_keys=False, default=_json_default, allow_nan=False) + "\n"


def write_json(path: str | os.PathLike, data: Any) -> Path:
    return write_text(path, dumps_json(data))


def read_json(path: str | os.PathLike) -> Any:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def read_json_object(path: str | os.PathLike, what: str, noun: str, hint: str) -> dict[str, Any]:
    """The JSON object in the file ``path``; a one-line EdgepipeError when it is missing, not a file, not UTF-8
    text, empty, not valid JSON, or JSON but not an object. ``what`` names the kind of file ("results file"),
    ``noun`` what it should hold ("edgepipe results"), ``hint`` what to pass instead."""
    path = Path(path)
    if not path.is_file():
        raise EdgepipeError(f"{what} '{path}' does not exist" if not path.exists() else f"'{path}' is not a file", hint)
    try:
        text = path.read_text(encoding="utf-8")
        data = json.loads(text)
    except UnicodeDecodeError:
        raise EdgepipeError(f"'{path}' is not a text file", hint) from None
    except ValueError as exc:
        problem = "is empty" if not text.strip() else f"is not valid JSON ({exc.msg} at line {exc.lineno})"
        raise EdgepipeError(f"{what} '{path}' {problem}", hint) from None
    if not isinstance(data, dict):
        raise EdgepipeError(f"'{path}' is not {noun} (a JSON {type(data).__name__})", hint)
    return data


def sha256_file(path: str | os.PathLike, chunk_bytes: int = 1 << 20) -> str:
    """SHA-256 of a file, or of a directory's files (names and contents, in sorted order; a symbolic link in
    it counts by the name it points to, never by what it points at)."""
    path = Path(path)
    digest = hashlib.sha256()
    if path.is_dir():
        for child in sorted(p for p in path.rglob("*") if p.is_file() or p.is_symlink()):
            digest.update(str(child.relative_to(path)).encode())
            digest.update(os.readlink(child).encode() if child.is_symlink() else sha256_file(child).encode())
        return digest.hexdigest()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(chunk_bytes), b""):
            digest.update(chunk)
    return digest.hexdigest()


def sha256_value(value: Any) -> str:
    """SHA-256 of a JSON-serialisable value (stable across runs: keys sorted)."""
    text = json.dumps(value, sort_keys=True, default=_json_default)
    return hashlib.sha256(text.encode()).hexdigest()


def cache_dir() -> Path:
    """edgepipe's folder in the user's cache ($XDG_CACHE_HOME/edgepipe, default ~/.cache/edgepipe); not created here."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "edgepipe"


def size_mb(path: str | os.PathLike) -> float:
    """Size of a file or directory in megabytes (10**6 bytes)."""
    path = Path(path)
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 1e6
    return path.stat().st_size / 1e6
