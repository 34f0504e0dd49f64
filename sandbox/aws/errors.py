"""EBS direct API errors in the JSON shape botocore parses into ``ClientError``.

botocore reads the error code from the ``x-amzn-ErrorType`` header (rest-json protocol) and the
modeled members (``Message``, ``Reason``) from the JSON body, so a test can assert on
``err.response["Error"]["Code"]`` and ``err.response["Reason"]`` exactly as against AWS.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

# HTTP status per error shape, from botocore's ebs 2019-11-02 model.
ERROR_STATUS: dict[str, int] = {
    "AccessDeniedException": 403,
    "ConcurrentLimitExceededException": 400,
    "ConflictException": 409,
    "InternalServerException": 500,
    "RequestThrottledException": 400,
    "ResourceNotFoundException": 404,
    "ServiceQuotaExceededException": 402,
    "ValidationException": 400,
    # Not modeled for ebs, but what a load balancer in front of AWS answers when overloaded;
    # botocore retries it like any 503.
    "ServiceUnavailableException": 503,
}


class EbsError(Exception):
    """An error answer of the EBS direct APIs (code, HTTP status, optional Reason)."""

    def __init__(
        self, code: str, message: str, reason: str | None = None, status: int | None = None
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.reason = reason
        self.status = status if status is not None else ERROR_STATUS.get(code, 400)

    def body(self) -> bytes:
        """JSON body with the members botocore's modeled-error parser looks for."""
        doc: dict[str, str] = {"__type": self.code, "message": self.message,
                               "Message": self.message}
        if self.reason is not None:
            doc["Reason"] = self.reason
        return json.dumps(doc).encode()


@dataclass(frozen=True)
class ErrorSpec:
    """A named error to raise on demand (fault injection): code plus optional reason/status."""

    code: str
    reason: str | None = None
    status: int | None = None
    message: str = "Injected by the local AWS sandbox"

    def make(self) -> EbsError:
        return EbsError(self.code, self.message, self.reason, self.status)


def validation(reason: str, message: str) -> EbsError:
    return EbsError("ValidationException", message, reason)


def not_found(snapshot_id: str) -> EbsError:
    return EbsError(
        "ResourceNotFoundException",
        f"The snapshot '{snapshot_id}' does not exist.",
        "SNAPSHOT_NOT_FOUND",
    )


def throttled(reason: str = "ACCOUNT_THROTTLED") -> EbsError:
    return EbsError(
        "RequestThrottledException",
        "The number of API requests has exceeded the maximum allowed API request throttling "
        "limit.",
        reason,
    )


def internal(message: str = "An internal error has occurred.") -> EbsError:
    return EbsError("InternalServerException", message)
