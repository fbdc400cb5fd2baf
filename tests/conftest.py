"""Shared pytest fixtures for every test file.

* ``isolated_python``: run Python code in a fresh subprocess where ``rnnkit`` and ``apps``
  are NOT importable (the check that exported SavedModels stand alone). ``python -I``
  alone is not enough because the editable install puts rnnkit on every sys.path, so the
  child also gets an import blocker for those two packages.
* ``rnnkit_cache``: the data cache all tests share (``$RNNKIT_CACHE`` or the default), so
  real downloads happen once per machine, not once per test.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]

_BLOCKER = '''
import importlib.abc, sys
class _Blocked(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("rnnkit", "rnnkit_apps", "apps"):
            raise ModuleNotFoundError(f"{name} is blocked in this test process", name=name)
        return None
sys.meta_path.insert(0, _Blocked())
for _mod in [m for m in sys.modules if m.split(".")[0] in ("rnnkit", "rnnkit_apps", "apps")]:
    del sys.modules[_mod]
'''


def run_python_without_rnnkit(
    code: str, cwd: str | os.PathLike[str], timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    """Run ``code`` with this interpreter in a fresh process where rnnkit cannot be imported.

    The child runs with ``-I`` (no PYTHONPATH, no user site, script dir not on sys.path),
    in ``cwd`` (pick a folder outside the repository), with an import blocker for
    ``rnnkit`` and ``apps``. TensorFlow logging is silenced.

    Args:
        code: Python source; dedented.
        cwd: the working directory of the child.
        timeout: seconds before the child is killed.

    Returns:
        The completed process (``check`` is not applied: assert on ``returncode``).
    """
    script = Path(cwd) / "_isolated_main.py"
    script.write_text(_BLOCKER + "\n" + textwrap.dedent(code))
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    return subprocess.run(
        [sys.executable, "-I", str(script)], cwd=cwd, env=env, capture_output=True,
        text=True, timeout=timeout, check=False,
    )


@pytest.fixture
def isolated_python(tmp_path: Path) -> Callable[..., subprocess.CompletedProcess[str]]:
    """Return ``run(code, timeout=300) -> CompletedProcess`` running in a fresh process,
    cwd a temporary folder, with rnnkit not importable (see run_python_without_rnnkit)."""
    work = tmp_path / "isolated"
    work.mkdir()

    def run(code: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        return run_python_without_rnnkit(code, work, timeout)

    return run


def last_json_line(stdout: str) -> object:
    """Parse the last line of ``stdout`` that is a JSON document (child processes print
    their result as one JSON line after any library noise)."""
    for line in reversed(stdout.strip().splitlines()):
        line = line.strip()
        if line.startswith(("{", "[")):
            return json.loads(line)
    raise AssertionError(f"no JSON line in output:\n{stdout[-2000:]}")


@pytest.fixture(scope="session")
def rnnkit_cache() -> Path:
    """The shared data cache (real downloads are cached here across tests and runs)."""
    from rnnkit.paths import cache_dir

    return cache_dir()
