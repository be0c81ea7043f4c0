"""The kvmcloud package and its dependencies, shipped to hosts as one tar.

Hosts reach no package index, so the controller builds a wheelhouse (the
kvmcloud wheel from this source tree plus a wheel of every dependency) and
the common role installs from it with ``pip --no-index``. The dependency
wheels are cached by the hash of ``setup.cfg``; the kvmcloud wheel is rebuilt
each time so that the shipped code is the code of the tree.

The wheel holds the six packages a host runs (:data:`PACKAGES`) and nothing
else: the simulator, the tests and the benchmarks stay in the source tree,
whatever ``setup.cfg`` finds for a development install.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import tarfile
from dataclasses import dataclass
from pathlib import Path

from controller.deploy.errors import DeployError

log = logging.getLogger(__name__)

#: the packages of the kvmcloud wheel shipped to hosts
PACKAGES = ("agentcore", "kvmagent", "storageagent", "sftpbackup", "cephagent", "controller")
#: the files beside them that the build reads (metadata; README.md is the long description)
BUILD_FILES = ("setup.cfg", "pyproject.toml", "README.md")
WHEEL_NAME = re.compile(r"^kvmcloud-(?P<version>[^-]+)-.*\.whl$")


@dataclass(frozen=True)
class Wheelhouse:
    """A tar of wheels holding exactly one kvmcloud version."""

    tar: Path
    version: str

    @classmethod
    def from_dir(cls, wheels: Path, out: Path) -> Wheelhouse:
        """Pack a directory of wheels into ``out/kvmcloud-<version>-<hash>.tar``."""
        found = [m for p in sorted(wheels.glob("kvmcloud-*.whl")) if (m := WHEEL_NAME.match(p.name))]
        if len(found) != 1:
            raise DeployError(f"{wheels} must hold exactly one kvmcloud wheel, found {len(found)}")
        version = found[0]["version"]
        digest = hashlib.sha256()
        files = sorted(p for p in wheels.iterdir() if p.suffix == ".whl")
        for p in files:
            digest.update(p.name.encode())
            digest.update(p.read_bytes())
        out.mkdir(parents=True, exist_ok=True)
        tar = out / f"kvmcloud-{version}-{digest.hexdigest()[:12]}.tar"
        if not tar.exists():
            tmp = tar.with_suffix(".tmp")
            with tarfile.open(tmp, "w") as t:
                for p in files:
                    # fixed metadata: the same wheels give the same tar (idempotent copies)
                    info = t.gettarinfo(str(p), arcname=p.name)
                    info.mtime, info.uid, info.gid, info.uname, info.gname = 0, 0, 0, "", ""
                    with open(p, "rb") as f:
                        t.addfile(info, f)
            tmp.rename(tar)
        return cls(tar, version)

    @classmethod
    def build(cls, source: Path, cache: Path, timeout: float = 600) -> Wheelhouse:
        """Wheels of the kvmcloud tree at ``source`` and of its dependencies.

        Reused while the tree's sources are unchanged, so that a re-deploy
        ships the very same file (and Ansible reports nothing changed).
        """
        stamp = cache / f"source-{source_digest(source)}.json"
        if stamp.exists():
            known = json.loads(stamp.read_text())
            if Path(known["tar"]).exists():
                return cls(Path(known["tar"]), str(known["version"]))
        house = cls._build(source, cache, timeout)
        stamp.write_text(json.dumps({"tar": str(house.tar), "version": house.version}))
        return house

    @classmethod
    def _build(cls, source: Path, cache: Path, timeout: float) -> Wheelhouse:
        setup_cfg = (source / "setup.cfg").read_bytes()
        deps_dir = cache / f"deps-{hashlib.sha256(setup_cfg).hexdigest()[:12]}"
        pip = [sys.executable, "-m", "pip", "wheel", "-q", "--disable-pip-version-check"]
        if not deps_dir.exists():
            tmp = cache / "deps.tmp"
            shutil.rmtree(tmp, ignore_errors=True)
            _run([*pip, "-w", str(tmp), str(source)], timeout)
            for p in tmp.glob("kvmcloud-*.whl"):
                p.unlink()
            tmp.rename(deps_dir)
        build = cache / "build"
        shutil.rmtree(build, ignore_errors=True)
        build.mkdir(parents=True)
        # a copy of what is shipped keeps build artefacts out of the source and
        # everything else (simulator, tests, bench) out of the wheel
        src = build / "src"
        copy_shipped(source, src)
        _run([*pip, "--no-deps", "-w", str(build / "wheels"), str(src)], timeout)
        for p in deps_dir.glob("*.whl"):
            shutil.copy2(p, build / "wheels" / p.name)
        house = cls.from_dir(build / "wheels", cache)
        shutil.rmtree(build, ignore_errors=True)
        log.info("wheelhouse %s (kvmcloud %s)", house.tar, house.version)
        return house


def shipped_files(source: Path) -> list[Path]:
    """The files of the tree at ``source`` that go into the kvmcloud wheel, sorted."""
    files = [source / name for name in BUILD_FILES]
    for pkg in PACKAGES:
        files.extend(p for p in (source / pkg).rglob("*") if p.is_file() and "__pycache__" not in p.parts)
    return sorted(f for f in files if f.exists())


def copy_shipped(source: Path, dest: Path) -> None:
    """Copy :func:`shipped_files` of ``source`` to ``dest``, in the same layout."""
    for p in shipped_files(source):
        target = dest / p.relative_to(source)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(p, target)


def source_digest(source: Path) -> str:
    """A hash of what goes into the kvmcloud wheel."""
    digest = hashlib.sha256()
    for p in shipped_files(source):
        digest.update(str(p.relative_to(source)).encode() + b"\0")
        digest.update(p.read_bytes())
    return digest.hexdigest()[:16]


def _run(argv: list[str], timeout: float) -> None:
    # fixed timestamps inside the wheel: the same sources give the same bytes
    env = {**os.environ, "SOURCE_DATE_EPOCH": "315532800"}
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False, env=env)
    except subprocess.TimeoutExpired:
        raise DeployError(f"building wheels timed out after {timeout:.0f}s") from None
    if proc.returncode != 0:
        raise DeployError(f"building wheels failed: {proc.stderr.strip()[-2000:]}")
