"""Errors of the image store and its transfers."""

from __future__ import annotations

from agentcore.errors import AgentError, Conflict, InvalidRequest, NotFound


class ImageNotFound(NotFound):
    code = "IMAGE_NOT_FOUND"
    default_message = "no such image in the store"


class ImageExists(Conflict):
    code = "IMAGE_EXISTS"
    default_message = "an image with this name but other content is already in the store"


class ChunkCorrupt(AgentError):
    code = "CHUNK_CORRUPT"
    default_message = "a chunk does not match its digest"


class ChunkMissing(AgentError):
    code = "CHUNK_MISSING"
    default_message = "a chunk the manifest names is not in the store"


class StoreMismatch(Conflict):
    code = "STORE_MISMATCH"
    default_message = "the directory holds another backup storage"


class StoreNotInitialised(NotFound):
    code = "STORE_NOT_CONNECTED"
    default_message = "the directory is not a store yet; send connect first"


class BadImage(InvalidRequest):
    code = "BAD_IMAGE"
    default_message = "the image is not acceptable"


class SizeMismatch(InvalidRequest):
    code = "SIZE_MISMATCH"
    default_message = "the image's size is not the size announced"


class DigestMismatch(InvalidRequest):
    code = "DIGEST_MISMATCH"
    default_message = "the image's sha256 is not the digest announced"


class DownloadFailed(AgentError):
    code = "DOWNLOAD_FAILED"
    default_message = "the image could not be downloaded"


class UnsupportedUrl(InvalidRequest):
    code = "UNSUPPORTED_URL"
    default_message = "the URL's scheme or location is not supported"


class TransferFailed(AgentError):
    code = "TRANSFER_FAILED"
    default_message = "the SFTP transfer failed"
