"""Atomic file and directory writes: a reader never sees a half-written result.

Everything is written to a temporary sibling (same directory, so the same filesystem) and
renamed into place with ``os.replace`` only once complete; on any error the temporary is
removed and the previous file, if any, is left untouched.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

__all__ = [
    "atomic_directory",
    "atomic_path",
    "atomic_write_bytes",
    "atomic_write_json",
    "atomic_write_text",
]


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str], suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary file path beside ``path``; rename it onto ``path`` on success.

    For writers that insist on a file name (``model.save``, ``savefig``, ``zip.extract``).
    The temporary keeps ``path``'s suffix by default because some writers pick their
    format from it.

    Args:
        path: the final file path. Its parent is created.
        suffix: suffix of the temporary name (default: the suffix of ``path``).
    """
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(
        prefix=f".tmp-{final.name}-", suffix=final.suffix if suffix is None else suffix,
        dir=final.parent,
    )
    os.close(fd)
    tmp = Path(tmp_name)
    # mkstemp creates 0600 files; give the result the usual umask-based mode so other
    # users (a TF Serving container, a CI artefact upload) can read it.
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    try:
        yield tmp
        if not tmp.exists():
            raise FileNotFoundError(f"the writer did not create {tmp} (for {final})")
        os.replace(tmp, final)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (temp file, fsync, rename).

    Args:
        path: destination file; its parent folder is created.
        data: the bytes to write.

    Returns:
        The destination path.
    """
    final = Path(path)
    with atomic_path(final) as tmp, open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    return final


def atomic_write_text(path: str | os.PathLike[str], text: str, encoding: str = "utf-8") -> Path:
    """Write ``text`` to ``path`` atomically.

    Args:
        path: destination file; its parent folder is created.
        text: the text to write.
        encoding: text encoding (UTF-8 by default).
    """
    return atomic_write_bytes(path, text.encode(encoding))


def _json_default(obj: Any) -> Any:
    # numpy scalars/arrays and paths show up in metrics; serialise them plainly.
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def atomic_write_json(path: str | os.PathLike[str], obj: Any, indent: int = 2) -> Path:
    """Serialise ``obj`` as JSON and write it atomically.

    Serialisation happens before anything touches the disk, so an unserialisable object
    leaves no file behind. numpy values are converted with ``.tolist()``.

    Args:
        path: destination file; its parent folder is created.
        obj: a JSON-serialisable object (numpy scalars and arrays allowed).
        indent: JSON indentation.
    """
    text = json.dumps(obj, indent=indent, sort_keys=True, default=_json_default) + "\n"
    return atomic_write_text(path, text)


@contextlib.contextmanager
def atomic_directory(final_path: str | os.PathLike[str], overwrite: bool = False) -> Iterator[Path]:
    """Yield a hidden temporary sibling folder that is renamed to ``final_path`` on success.

    On error the temporary folder is removed and ``final_path`` is untouched.

    Args:
        final_path: the folder to create.
        overwrite: replace an existing ``final_path`` (it is moved aside, then removed,
            after the new folder is in place). Without it an existing folder is an error.
    """
    final = Path(final_path)
    final.parent.mkdir(parents=True, exist_ok=True)
    if final.exists() and not overwrite:
        raise FileExistsError(f"{final} already exists")
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{final.name}-", dir=final.parent))
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes 0700 folders
    try:
        yield tmp
        old = None
        if final.exists():
            old = final.with_name(f".old-{final.name}-{os.getpid()}")
            os.replace(final, old)
        os.replace(tmp, final)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
