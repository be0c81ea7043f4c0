"""Every error code an agent sends: its HTTP status and what it means.

This table is the protocol's vocabulary of failures. The agents' error
classes take their HTTP status from it (a class cannot name a code that is
not here, nor set a status of its own), the controller reads the same codes
in agent replies and answers its own API errors with the same statuses, and
``docs/protocol.md`` lists exactly these codes (``python -m
agentcore.errorcodes`` prints that section). A code means one thing and has
one status everywhere, whichever agent sends it.

The status is the one an HTTP error carrying the code is answered with. A
command's own failure is data (``success: false``, HTTP 200 when
synchronous), so for most codes the status only tells a client how to class
the failure.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class ErrorCode:
    """The HTTP status of one error code and a one-line meaning."""

    status: int
    meaning: str


def _table(*rows: tuple[str, int, str]) -> dict[str, ErrorCode]:
    table: dict[str, ErrorCode] = {}
    for code, status, meaning in rows:
        if code in table:
            raise ValueError(f"error code {code} is listed twice")
        table[code] = ErrorCode(status, meaning)
    return table


CODES: Mapping[str, ErrorCode] = _table(
    # the protocol itself (agentcore), on every agent
    ("INVALID_REQUEST", 400, "the body, a header or a field cannot be acted on; details name the field"),
    ("UNAUTHORIZED", 401, "no bearer token, or a wrong one"),
    ("NOT_FOUND", 404, "no such command path, task or resource"),
    ("METHOD_NOT_ALLOWED", 405, "a path asked with a method it does not take"),
    ("CONFLICT", 409, "the resource is in another state, or a taskuuid was used for another command"),
    ("REQUEST_ENTITY_TOO_LARGE", 413, "the request body is larger than the receiver takes"),
    ("TASK_RUNNING", 409, "a task with this taskuuid is already running"),
    ("AGENT_BUSY", 503, "the agent already holds max_queued unanswered tasks"),
    ("IN_USE", 409, "the resource is held (attached, mounted, opened)"),
    ("PATH_OUTSIDE_ROOT", 400, "a path escapes its storage root"),
    ("URL_REFUSED", 400, "a download URL or redirect is not http(s), has credentials or leads to a "
                         "loopback, link-local or metadata address"),
    ("CANCELLED", 409, "the task was cancelled"),
    ("DEADLINE_EXCEEDED", 504, "the task's deadline passed"),
    ("INTERRUPTED", 500, "the agent stopped while the task was queued or running"),
    ("PROCESS_FAILED", 500, "a command-line tool failed; details carry argv, exit code, stderr tail"),
    ("PROCESS_TIMEOUT", 504, "a command-line tool outlived its timeout"),
    ("COMMAND_FAILED", 500, "the command failed for a reason no narrower code names"),
    ("INTERNAL_ERROR", 500, "a bug: an unexpected exception, with its text"),
    # images and downloads (storageagent, sftpbackup, cephagent)
    ("DOWNLOAD_FAILED", 502, "the image source could not be read"),
    ("DIGEST_MISMATCH", 422, "the data does not match the digest announced"),
    ("SIZE_MISMATCH", 422, "the data does not have the size announced"),
    ("IMAGE_NOT_FOUND", 404, "no such image in the store, or no such RBD image"),
    ("IMAGE_EXISTS", 409, "an image of that name (with other content) exists"),
    # kvmagent
    ("HYPERVISOR_UNAVAILABLE", 503, "libvirtd cannot be reached; the agent reconnects"),
    ("HYPERVISOR_BUSY", 409, "a domain's job lock or a resource is held; try again"),
    ("HYPERVISOR_ACCESS_DENIED", 403, "libvirtd's ACL or authentication refused the request"),
    ("HOST_PATH_NOT_ACCESSIBLE", 403, "QEMU may not open a file; details.path names it"),
    ("DOMAIN_EXISTS", 409, "a domain of that name or UUID exists already"),
    ("INVALID_DOMAIN_CONFIG", 400, "libvirt refused the domain XML or an argument"),
    ("LIBVIRT_ERROR", 500, "libvirt failed for a reason no narrower code names"),
    ("MIGRATION_FAILED", 500, "the live migration failed"),
    ("NETWORK_FAILED", 500, "the kernel refused a network change (bridge, VLAN, VXLAN)"),
    ("DHCP_FAILED", 500, "the DHCP server of a network could not be set up"),
    # storageagent
    ("STORAGE_NOT_READY", 409, "the storage is not mounted or initialised at this path"),
    ("STORAGE_UNREACHABLE", 503, "the storage did not answer a write-and-read test in time"),
    ("SOURCE_UNAVAILABLE", 501, "the agent cannot reach this kind of backup storage"),
    # sftpbackup
    ("STORE_NOT_CONNECTED", 404, "the directory is not a store yet; send connect first"),
    ("STORE_MISMATCH", 409, "the directory holds another backup storage"),
    ("STORE_LINK_REFUSED", 500, "a symbolic link or special file inside the store was refused"),
    ("CHUNK_CORRUPT", 500, "a chunk does not match its digest"),
    ("CHUNK_MISSING", 500, "a chunk the manifest names is not in the store"),
    ("BAD_IMAGE", 400, "the image is not acceptable"),
    ("UNSUPPORTED_URL", 400, "the URL's scheme or location is not supported"),
    ("TRANSFER_FAILED", 502, "the SFTP transfer failed"),
    # cephagent
    ("CEPH_TIMEOUT", 504, "a rados/rbd call did not finish in time"),
    ("CEPH_UNREACHABLE", 503, "no monitor could be reached, or the cephx handshake failed"),
    ("CEPH_PERMISSION_DENIED", 403, "the cephx user lacks a capability the command needs"),
    ("CEPH_ERROR", 500, "librados or librbd failed for a reason no narrower code names"),
    ("CREDENTIAL_REFUSED", 400, "the keyring or key reference is not acceptable"),
    ("FSID_MISMATCH", 409, "the monitors belong to another cluster than the one named"),
    ("POOL_NOT_FOUND", 404, "no such pool"),
    ("SNAPSHOT_NOT_FOUND", 404, "no such RBD snapshot"),
    ("SNAPSHOT_EXISTS", 409, "a snapshot of that name exists"),
    ("SNAPSHOT_PROTECTED", 409, "the snapshot is protected; unprotect it first"),
    ("HAS_SNAPSHOTS", 409, "the image has snapshots; ask to purge them"),
    ("HAS_CHILDREN", 409, "a snapshot of the image has clones"),
    ("IMAGE_FORMAT_UNSUPPORTED", 422, "the image format is not supported"),
    # the simulator, standing in for the agents
    ("INSUFFICIENT_CAPACITY", 409, "the simulated host or storage has not enough left"),
    ("SIMULATED_FAILURE", 500, "a failure injected by a simulator fault rule (its default code)"),
)

#: the code an HTTP error of the web framework (unknown path, wrong method,
#: body too large...) is answered with; other 4xx are INVALID_REQUEST, 5xx INTERNAL_ERROR
HTTP_ERROR_CODES: Mapping[int, str] = {
    400: "INVALID_REQUEST", 401: "UNAUTHORIZED", 404: "NOT_FOUND", 405: "METHOD_NOT_ALLOWED",
    409: "CONFLICT", 413: "REQUEST_ENTITY_TOO_LARGE",
}


def status_of(code: str, table: Mapping[str, ErrorCode] = CODES) -> int:
    """The HTTP status of ``code`` (``KeyError`` for a code not in ``table``)."""
    return table[code].status


def code_for_http_error(status: int) -> str:
    """The code that answers an HTTP error the web framework raised with ``status``."""
    if status in HTTP_ERROR_CODES:
        return HTTP_ERROR_CODES[status]
    return "INVALID_REQUEST" if 400 <= status < 500 else "INTERNAL_ERROR"


def markdown_table(table: Mapping[str, ErrorCode] = CODES) -> str:
    """The table as the Markdown that ``docs/protocol.md`` holds, in table order."""
    lines = ["| code | HTTP | meaning |", "|---|---|---|"]
    lines += [f"| `{code}` | {e.status} | {e.meaning} |" for code, e in table.items()]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(markdown_table(), end="")
