"""Debian packages shipped to hosts that reach no package mirror.

A host behind a closed network (or a fresh rack with no proxy yet) cannot run
``apt-get install``. For such a target (``DeployTarget.ship_packages``) the
controller, which does reach a mirror, resolves the packages the role installs
(its ``<role>_packages`` default plus the common role's ``kvmcloud_packages``
and ``python3-apt`` for Ansible's apt module) with all their dependencies,
downloads them with ``apt-get download``, writes a ``Packages`` index and packs
it all into one tar. The ``localrepo`` role unpacks it on the host and makes it
a trusted ``file:`` apt source, so the roles' own apt tasks install from it.

The packages are the controller's candidate versions: ship only to hosts of
the controller's Debian release. Tars are cached by the exact set of .deb
files, so a re-deploy ships the same bytes and Ansible reports no change.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
import subprocess
import tarfile
from dataclasses import dataclass
from pathlib import Path

import yaml

from controller.deploy.errors import DeployError

log = logging.getLogger(__name__)

ALWAYS = ("python3-apt",)
"""what Ansible's apt module itself needs on the host"""

_DEPENDS = ["apt-cache", "depends", "--recurse", "--no-recommends", "--no-suggests", "--no-conflicts",
            "--no-breaks", "--no-replaces", "--no-enhances"]


@dataclass(frozen=True)
class LocalRepo:
    """A tar of .deb files with their ``Packages`` index."""

    tar: Path
    packages: tuple[str, ...]
    """the packages asked for (their dependencies are in the tar too)"""


def role_packages(ansible_dir: Path, role: str) -> list[str]:
    """The Debian packages ``role`` installs, read from the roles' defaults."""
    names: list[str] = []
    for owner, var in (("common", "kvmcloud_packages"), (role, f"{role}_packages")):
        path = ansible_dir / "roles" / owner / "defaults" / "main.yml"
        defaults = yaml.safe_load(path.read_text()) or {}
        value = defaults.get(var) or []
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise DeployError(f"{path}: {var} must be a list of package names")
        names.extend(value)
    return list(dict.fromkeys([*names, *ALWAYS]))


def build(packages: list[str], cache: Path, timeout: float = 600) -> LocalRepo:
    """Download ``packages`` and their dependencies into a cached repository tar."""
    closure = _closure(packages, timeout)
    uris = _uris(closure, timeout)
    files = sorted(uris)
    key = hashlib.sha256("\n".join(files).encode()).hexdigest()[:16]
    cache.mkdir(parents=True, exist_ok=True)
    tar = cache / f"debs-{key}.tar"
    if tar.exists():
        return LocalRepo(tar, tuple(packages))
    work = cache / f"debs-{key}.tmp"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir()
    try:
        _run(["apt-get", "download", "-q", *[uris[f] for f in files]], timeout, cwd=work)
        index = _run(["dpkg-scanpackages", "--multiversion", "."], timeout, cwd=work)
        (work / "Packages").write_text(index)
        _pack(work, tar)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    log.info("local package repository %s: %d packages for %s", tar, len(files), ", ".join(packages))
    return LocalRepo(tar, tuple(packages))


def _closure(packages: list[str], timeout: float) -> list[str]:
    """Every real package ``packages`` need, recursively (virtual ones are left out)."""
    out = _run([*_DEPENDS, *packages], timeout)
    names = {line.strip() for line in out.splitlines() if line and not line.startswith(" ")}
    return sorted(n for n in names if not n.startswith("<"))


def _uris(names: list[str], timeout: float) -> dict[str, str]:
    """``{deb file name: name=version}`` of the candidate version of each package."""
    out = _run(["apt-get", "download", "--print-uris", "-q", *names], timeout)
    found: dict[str, str] = {}
    for line in out.splitlines():
        parts = line.split()
        if len(parts) < 2 or not parts[1].endswith(".deb"):
            continue
        filename = parts[1]
        name, version = filename.split("_")[:2]
        found[filename] = f"{name}={version.replace('%3a', ':')}"
    if not found:
        raise DeployError(f"apt knows none of the packages {', '.join(names)}: is its package list updated?")
    return found


def _pack(src: Path, tar: Path) -> None:
    tmp = tar.with_suffix(".part")
    with tarfile.open(tmp, "w") as t:
        for p in sorted(src.iterdir()):
            # fixed metadata: the same files give the same tar (idempotent copies)
            info = t.gettarinfo(str(p), arcname=p.name)
            info.mtime, info.uid, info.gid, info.uname, info.gname = 0, 0, 0, "", ""
            with open(p, "rb") as f:
                t.addfile(info, f)
    tmp.rename(tar)


def _run(argv: list[str], timeout: float, cwd: Path | None = None) -> str:
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False, cwd=cwd)
    except FileNotFoundError:
        raise DeployError(f"{argv[0]} is not on the controller (shipping packages needs apt and dpkg-dev)") from None
    except subprocess.TimeoutExpired:
        raise DeployError(f"{' '.join(argv[:2])} timed out after {timeout:.0f}s") from None
    if proc.returncode != 0:
        raise DeployError(f"{' '.join(argv[:2])} failed: {proc.stderr.strip()[-2000:]}")
    return proc.stdout
