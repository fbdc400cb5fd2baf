"""Packaging: every package folder is installed, the apps as rnnkit_apps (never a top-level
`apps`), and the console entry point dispatches to them."""

from __future__ import annotations

import subprocess
import sys
import tomllib

from conftest import REPO_ROOT


def _declared() -> tuple[set[str], dict[str, str]]:
    config = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    return set(config["packages"]), config.get("package-dir", {})


def test_every_package_folder_is_declared_and_apps_is_not_top_level():
    packages, package_dir = _declared()
    assert package_dir == {"rnnkit_apps": "apps"}
    assert not any(p == "apps" or p.startswith("apps.") for p in packages)
    found = set()
    for root, installed in (("rnnkit", "rnnkit"), ("apps", "rnnkit_apps")):
        for init in (REPO_ROOT / root).rglob("__init__.py"):
            relative = init.parent.relative_to(REPO_ROOT / root).parts
            found.add(".".join((installed, *relative)))
    assert found == packages, (found - packages, packages - found)


def test_installed_apps_resolve_outside_the_repository(tmp_path):
    # From another folder `apps` is not importable, the installed rnnkit_apps is, and the
    # command reaches an app through it.
    code = ("import importlib.util as u, rnnkit.cli as c; "
            "print(u.find_spec('apps') is None, c.app_module('sentiment').__name__)")
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                          text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split()[-2:] == ["True", "rnnkit_apps.sentiment.app"]
