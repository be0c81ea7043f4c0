"""What goes into the kvmcloud wheel shipped to hosts: the six runtime packages, never the
simulator (nor tests or benchmarks). No wheel is built here (that runs pip)."""

from __future__ import annotations

from pathlib import Path

from controller.deploy.wheelhouse import BUILD_FILES, PACKAGES, copy_shipped, shipped_files, source_digest

ROOT = Path(__file__).resolve().parents[4]
SHIPPED = {"agentcore", "kvmagent", "storageagent", "sftpbackup", "cephagent", "controller"}


def _tree(root: Path) -> Path:
    root.mkdir(exist_ok=True)
    for name in BUILD_FILES:
        (root / name).write_text(f"{name}\n")
    for pkg in (*PACKAGES, "simulator", "tests", "bench"):
        (root / pkg / "sub").mkdir(parents=True)
        (root / pkg / "__init__.py").write_text("")
        (root / pkg / "sub" / "mod.py").write_text(f"# {pkg}\n")
    (root / "agentcore" / "__pycache__").mkdir()
    (root / "agentcore" / "__pycache__" / "x.pyc").write_bytes(b"\0")
    return root


def test_the_shipped_packages_are_the_six_a_host_runs() -> None:
    assert set(PACKAGES) == SHIPPED
    tops = {p.relative_to(ROOT).parts[0] for p in shipped_files(ROOT)}
    assert tops == SHIPPED | set(BUILD_FILES)
    assert (ROOT / "simulator" / "__init__.py").exists()  # it is in the tree, only not shipped


def test_the_wheels_source_copy_leaves_out_the_simulator(tmp_path: Path) -> None:
    source = _tree(tmp_path / "src")
    copy_shipped(source, tmp_path / "copy")
    copied = {str(p.relative_to(tmp_path / "copy")) for p in (tmp_path / "copy").rglob("*") if p.is_file()}
    assert copied == {*BUILD_FILES, *(f"{pkg}/{f}" for pkg in SHIPPED for f in ("__init__.py", "sub/mod.py"))}


def test_the_source_digest_follows_the_shipped_files_only(tmp_path: Path) -> None:
    source = _tree(tmp_path)
    before = source_digest(source)
    for outside in ("simulator/sub/mod.py", "tests/sub/mod.py", "bench/sub/mod.py",
                    "agentcore/__pycache__/x.pyc"):
        (source / outside).write_text("changed\n")
        assert source_digest(source) == before, outside
    for pkg in SHIPPED:
        (source / pkg / "sub" / "mod.py").write_text("changed\n")
        after = source_digest(source)
        assert after != before, pkg
        before = after
    (source / "setup.cfg").write_text("changed\n")
    assert source_digest(source) != before
