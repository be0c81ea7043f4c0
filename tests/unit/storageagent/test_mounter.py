"""Reading /proc/self/mountinfo."""

from __future__ import annotations

from pathlib import Path

from storageagent.mounter import NfsMounter, mount_source

MOUNTINFO = """\
22 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw
40 22 0:35 / /var/lib/kvmcloud/storage/nfs/ps-1 rw,relatime shared:20 - nfs4 10.0.0.5:/export/ps rw,vers=4.1
41 22 254:0 /srv/export /mnt/with\\040space rw,relatime shared:1 - ext4 /dev/vda rw
42 40 0:36 / /var/lib/kvmcloud/storage/nfs/ps-1 rw,relatime shared:21 - nfs 10.0.0.6:/other rw,vers=3
"""


def test_mount_source_finds_the_last_mount_on_a_point(tmp_path: Path) -> None:
    mi = tmp_path / "mountinfo"
    mi.write_text(MOUNTINFO)
    assert mount_source(Path("/var/lib/kvmcloud/storage/nfs/ps-1"), mi) == ("nfs", "10.0.0.6:/other")
    assert mount_source(Path("/mnt/with space"), mi) == ("ext4", "/dev/vda")
    assert mount_source(Path("/var/lib/kvmcloud/storage/nfs/ps-2"), mi) is None


class _RecordingContext:
    """The part of a task context the mounter uses: records argv, runs nothing."""

    def __init__(self) -> None:
        self.argv: list[list[str]] = []

    def run(self, argv: list[str], *, timeout: float) -> None:
        self.argv.append(argv)


def test_nfs_is_mounted_nosuid_nodev_whatever_the_options_say() -> None:
    ctx = _RecordingContext()
    NfsMounter().mount(ctx, "10.0.0.5:/export/ps", "4.1", ["suid", "dev", "soft"],  # type: ignore[arg-type]
                       Path("/mnt/ps-1"))
    [argv] = ctx.argv
    opts = argv[argv.index("-o") + 1].split(",")
    # mount applies options left to right: the forced ones come last and win
    assert opts[0] == "vers=4.1" and opts[-2:] == ["nosuid", "nodev"]
