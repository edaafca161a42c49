"""Typed errors and their one mapping to HTTP: status code + body `{"error": {"message", "type", "code"}}`."""

from __future__ import annotations

from typing import Any


class ASRError(Exception):
    """Base of every error the API reports. Subclasses fix the HTTP status, type and code."""

    status_code = 500
    type = "server_error"
    code = "internal_error"

    def __init__(self, message: str, *, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "code": self.code}}


class InvalidRequest(ASRError):
    status_code = 400
    type = "invalid_request_error"
    code = "invalid_request"


class InvalidAudio(InvalidRequest):
    """The upload is empty, corrupt, too short or holds non-finite samples."""

    code = "invalid_audio"


class UnsupportedMediaType(ASRError):
    """A container/codec this server cannot decode (e.g. mp3 without ffmpeg)."""

    status_code = 415
    type = "invalid_request_error"
    code = "unsupported_media_type"


class PayloadTooLarge(ASRError):
    """Upload bigger than max_upload_mb, or audio longer than max_audio_s."""

    status_code = 413
    type = "invalid_request_error"
    code = "payload_too_large"


class UploadTimeout(ASRError):
    """The request body stalled: no data for upload_timeout_s."""

    status_code = 408
    type = "invalid_request_error"
    code = "upload_timeout"


class ClientClosed(ASRError):
    """The client hung up during the upload (nginx's 499; only logged and counted, nobody reads the answer)."""

    status_code = 499
    type = "invalid_request_error"
    code = "client_closed_request"


class HeadersTooLarge(ASRError):
    status_code = 431
    type = "invalid_request_error"
    code = "headers_too_large"


class MethodNotAllowed(ASRError):
    status_code = 405
    type = "invalid_request_error"
    code = "method_not_allowed"


class Unauthorized(ASRError):
    status_code = 401
    type = "authentication_error"
    code = "invalid_api_key"

    def __init__(self, message: str = "missing or invalid API key") -> None:
        super().__init__(message, headers={"WWW-Authenticate": "Bearer"})


class NotFound(ASRError):
    """A path under a known prefix that names nothing (e.g. a playground file that does not exist)."""

    status_code = 404
    type = "not_found_error"
    code = "not_found"


class ModelNotFound(ASRError):
    status_code = 404
    type = "invalid_request_error"
    code = "model_not_found"


class QueueFull(ASRError):
    """Backpressure: the batch queue holds max_queue_size items."""

    status_code = 429
    type = "rate_limit_error"
    code = "queue_full"

    def __init__(self, message: str, retry_after_s: int) -> None:
        super().__init__(message, headers={"Retry-After": str(max(1, retry_after_s))})


class ScratchFull(QueueFull):
    """Backpressure: the uploads in progress hold the server's scratch disk budget (--scratch-mb)."""

    code = "scratch_full"


class NotReady(ASRError):
    status_code = 503
    type = "server_error"
    code = "not_ready"

    def __init__(self, message: str = "model is not loaded yet") -> None:
        super().__init__(message, headers={"Retry-After": "5"})


class RequestTimeout(ASRError):
    status_code = 504
    type = "server_error"
    code = "timeout"


class InferenceFailed(ASRError):
    """The model raised on this item even when run alone."""

    status_code = 500
    type = "server_error"
    code = "inference_failed"


class DeviceFailed(ASRError):
    """The device is in an unrecoverable state (a sticky CUDA error): this server takes no more work and asks to
    be restarted (/healthz 503); another replica can answer the retry."""

    status_code = 503
    type = "server_error"
    code = "device_failed"

    def __init__(self, message: str) -> None:
        super().__init__(message, headers={"Retry-After": "5"})


class ModelLoadError(RuntimeError):
    """The model cannot be served: missing directory, unloadable weights, unknown family. Fatal at start."""
