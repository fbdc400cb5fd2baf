"""Tests of the shared mechanics: paths, atomic writes, fetch, export versioning, CLI."""

from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path

import numpy as np
import pytest
from conftest import last_json_line

from rnnkit import atomic, fetch, paths


def test_paths_follow_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("RNNKIT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("RNNKIT_SAVED_MODELS", str(tmp_path / "exports"))
    assert paths.cache_dir() == (tmp_path / "cache").resolve()
    assert paths.tfds_dir().is_dir() and paths.tfds_dir().parent == paths.cache_dir()
    assert paths.saved_models_dir("sentiment") == tmp_path / "exports" / "sentiment"
    assert paths.default_output_dir("sentiment") == Path("runs/sentiment")
    assert paths.reports_dir(tmp_path / "run") == tmp_path / "run" / "reports"
    assert (tmp_path / "run" / "reports").is_dir()


def test_atomic_writes_roundtrip(tmp_path):
    atomic.atomic_write_json(tmp_path / "a" / "m.json", {"acc": np.float32(0.5), "n": np.int64(3)})
    assert json.loads((tmp_path / "a" / "m.json").read_text()) == {"acc": 0.5, "n": 3}
    atomic.atomic_write_text(tmp_path / "t.txt", "héllo")
    assert (tmp_path / "t.txt").read_text(encoding="utf-8") == "héllo"
    umask = os.umask(0o022)
    try:
        atomic.atomic_write_bytes(tmp_path / "mode.bin", b"x")
    finally:
        os.umask(umask)
    assert (tmp_path / "mode.bin").stat().st_mode & 0o777 == 0o644  # not mkstemp's 0600
    (tmp_path / "mode.bin").unlink()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "t.txt"]


def test_atomic_json_error_leaves_old_file_and_no_temp(tmp_path):
    target = tmp_path / "m.json"
    atomic.atomic_write_json(target, {"v": 1})
    with pytest.raises(TypeError):
        atomic.atomic_write_json(target, {"v": object()})
    assert json.loads(target.read_text()) == {"v": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["m.json"]


def test_atomic_path_error_mid_write_leaves_nothing(tmp_path):
    target = tmp_path / "big.bin"
    with pytest.raises(RuntimeError), atomic.atomic_path(target) as tmp:
        tmp.write_bytes(b"partial")
        raise RuntimeError("writer crashed")
    assert list(tmp_path.iterdir()) == []


def test_atomic_directory(tmp_path):
    final = tmp_path / "out"
    with pytest.raises(ValueError), atomic.atomic_directory(final) as tmp:
        (tmp / "half").write_text("x")
        raise ValueError("boom")
    assert list(tmp_path.iterdir()) == []
    with atomic.atomic_directory(final) as tmp:
        (tmp / "done").write_text("x")
    assert (final / "done").read_text() == "x"
    with pytest.raises(FileExistsError), atomic.atomic_directory(final):
        pass
    with atomic.atomic_directory(final, overwrite=True) as tmp:
        (tmp / "new").write_text("y")
    assert [p.name for p in final.iterdir()] == ["new"]
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def _make_zip(path: Path, member: str, data: bytes) -> None:
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(member, data)


def test_zip_member_hash_checked(tmp_path, monkeypatch):
    monkeypatch.setenv("RNNKIT_CACHE", str(tmp_path / "cache"))
    data = b"review,sentiment\nGood film,positive\n"
    _make_zip(tmp_path / "x.whl", "data/x.csv", data)
    good = __import__("hashlib").sha256(data).hexdigest()
    out = fetch.zip_member(tmp_path / "x.whl", "data/x.csv", tmp_path / "o" / "x.csv", good)
    assert out.read_bytes() == data and fetch.sha256_file(out) == good
    with pytest.raises(fetch.FetchError, match="sha256 mismatch.*data/y.csv"):
        _make_zip(tmp_path / "y.whl", "data/y.csv", data)
        fetch.zip_member(tmp_path / "y.whl", "data/y.csv", tmp_path / "o" / "y.csv", "0" * 64)
    assert not (tmp_path / "o" / "y.csv").exists()
    assert sorted(p.name for p in (tmp_path / "o").iterdir()) == ["x.csv"]
    with pytest.raises(fetch.FetchError, match="no member 'nope'"):
        fetch.zip_member(tmp_path / "x.whl", "nope", tmp_path / "o" / "n.csv")


@pytest.mark.parametrize("kind", ["wheel", "sdist"])
def test_pypi_download_uses_cache_and_rejects_bad_hash(tmp_path, monkeypatch, kind):
    # A file already in the cache is returned without pip; a wrong hash is refetched,
    # and a failing fetch names the package. pip is made to fail so no network is used.
    monkeypatch.setenv("RNNKIT_CACHE", str(tmp_path / "cache"))
    get = fetch.pypi_wheel if kind == "wheel" else fetch.pypi_sdist
    cached = paths.raw_dir() / f"{kind}s"
    cached.mkdir(parents=True)
    name = "demo_pkg-1.0-py3-none-any.whl" if kind == "wheel" else "demo_pkg-1.0.tar.gz"
    path = cached / name
    path.write_bytes(b"not really a package")
    (cached / name.replace("1.0", "1.01")).write_bytes(b"another version")
    digest = fetch.sha256_file(path)
    assert get("demo-pkg", "1.0", digest) == path
    monkeypatch.setattr(fetch.sys, "executable", "/nonexistent/python")
    with pytest.raises(fetch.FetchError, match=f"{kind} demo-pkg==1.0"):
        get("demo-pkg", "1.0", "f" * 64)
    assert not path.exists()  # the bad cached copy is not kept


def test_apt_package_missing_names_package(tmp_path, monkeypatch):
    monkeypatch.setenv("RNNKIT_CACHE", str(tmp_path / "cache"))
    with pytest.raises(fetch.FetchError, match="rnnkit-no-such-package-xyz"):
        fetch.apt_package("rnnkit-no-such-package-xyz")
    assert not (tmp_path / "cache" / "deb" / "rnnkit-no-such-package-xyz").exists()


def test_export_versions_metrics_and_fresh_process(tmp_path, isolated_python):
    import tensorflow as tf

    from rnnkit.export import export_saved_model, latest_export, read_export_metrics

    class Doubler(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None], tf.float32, name="x")])
        def serve(self, x):
            return {"y": 2.0 * x}

    base = tmp_path / "saved_models" / "demo"
    with pytest.raises(FileNotFoundError, match="no exported model"):
        latest_export(base)
    module = Doubler()
    first = export_saved_model(module, base, {"serving_default": module.serve},
                               metrics={"accuracy": 0.5})
    second = export_saved_model(module, base, {"serving_default": module.serve})
    assert (first.name, second.name) == ("1", "2")
    assert latest_export(base) == second
    assert read_export_metrics(first) == {"accuracy": 0.5}
    with pytest.raises(FileExistsError):
        export_saved_model(module, base, {"serving_default": module.serve}, version=2)
    assert sorted(p.name for p in base.iterdir()) == ["1", "2"]  # no temp folder left
    proc = isolated_python(f"""
        import json, tensorflow as tf
        m = tf.saved_model.load({str(first)!r})
        out = m.signatures["serving_default"](x=tf.constant([1.5, -2.0]))
        print(json.dumps(out["y"].numpy().tolist()))
    """)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert last_json_line(proc.stdout) == [3.0, -4.0]


def test_isolated_python_blocks_rnnkit(isolated_python):
    proc = isolated_python("import rnnkit")
    assert proc.returncode != 0 and "blocked" in proc.stderr


def test_cli_dispatch_help_and_unknown():
    from rnnkit.cli import main

    assert main(["--help"]) == 0
    assert main(["no-such-app"]) == 2
    with pytest.raises(SystemExit) as exit_info:  # lazily imports the sentiment app
        main(["sentiment", "train", "--help"])
    assert exit_info.value.code == 0
