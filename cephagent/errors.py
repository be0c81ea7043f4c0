"""The cephagent's failure codes (on top of agentcore's)."""

from __future__ import annotations

from agentcore.errors import AgentError, Conflict, InvalidRequest, NotFound


class CephTimeout(AgentError):
    """A rados/rbd call did not finish within its bound (cluster stuck or unreachable)."""

    code = "CEPH_TIMEOUT"
    default_message = "the Ceph cluster did not answer in time"


class CephUnreachable(AgentError):
    """No monitor could be reached, or the cephx handshake failed."""

    code = "CEPH_UNREACHABLE"
    default_message = "cannot connect to the Ceph monitors"


class CephPermissionDenied(AgentError):
    """The cephx user lacks a capability the command needs."""

    code = "CEPH_PERMISSION_DENIED"
    default_message = "the cephx user lacks a capability for this operation"


class CephError(AgentError):
    """Any other error librados or librbd returned."""

    code = "CEPH_ERROR"
    default_message = "the Ceph operation failed"


class PoolNotFound(NotFound):
    code = "POOL_NOT_FOUND"
    default_message = "no such pool"


class ImageNotFound(NotFound):
    code = "IMAGE_NOT_FOUND"
    default_message = "no such RBD image"


class SnapshotNotFound(NotFound):
    code = "SNAPSHOT_NOT_FOUND"
    default_message = "no such RBD snapshot"


class ImageExists(Conflict):
    code = "IMAGE_EXISTS"
    default_message = "an RBD image of that name exists"


class HasSnapshots(Conflict):
    code = "HAS_SNAPSHOTS"
    default_message = "the image has snapshots; ask to purge them"


class HasChildren(Conflict):
    code = "HAS_CHILDREN"
    default_message = "a snapshot of the image has clones"


class SnapshotProtected(Conflict):
    code = "SNAPSHOT_PROTECTED"
    default_message = "the snapshot is protected; unprotect it first"


class CredentialRefused(InvalidRequest):
    """The keyring or key reference is not acceptable (outside the allowed
    directories, missing, or the admin user when that is not allowed)."""

    code = "CREDENTIAL_REFUSED"
    default_message = "the cephx credential reference was refused"


class FsidMismatch(Conflict):
    code = "FSID_MISMATCH"
    default_message = "the monitors belong to another cluster than the one named"


class DownloadFailed(AgentError):
    code = "DOWNLOAD_FAILED"
    default_message = "the image could not be downloaded"


class DigestMismatch(AgentError):
    code = "DIGEST_MISMATCH"
    default_message = "the downloaded data does not match the expected digest"


class UnsupportedImage(AgentError):
    code = "IMAGE_FORMAT_UNSUPPORTED"
    default_message = "the image format is not supported"


class SnapshotExists(Conflict):
    code = "SNAPSHOT_EXISTS"
    default_message = "a snapshot of that name exists"
