"""The gateway's exception tree, one root, so that ``except GatewayError`` means "ours":

    GatewayError
    ├── OutboundError          an outbound call failed past its retries
    │   ├── ChatwootError      Chatwoot's REST API
    │   ├── BotError           the bot backend (http, openai, python)
    │   └── TranscriptionError fetching or transcribing a voice note
    ├── LeaseLost              this run no longer holds the conversation's lease
    ├── ConfigError            a setting is missing or invalid (also a ValueError; app.settings)
    ├── InvalidPayload         a webhook body that is no usable Chatwoot event, 400
    │                          (also a ValueError; app.chatwoot.messages)
    ├── AuthError              a webhook without a valid signature or token, 401
    │                          (app.chatwoot.signature)
    └── SpoolFull              the local spool holds SPOOL_MAX_BYTES (also an OSError;
                               app.intake.spool)

The four below ``LeaseLost`` are defined beside the code that raises them; each also
derives from the standard exception its callers catch. Library exceptions
(requests, redis) are converted at the boundary with ``raise ... from exc``.
"""

from __future__ import annotations

__all__ = ["BotError", "ChatwootError", "GatewayError", "LeaseLost", "OutboundError", "TranscriptionError"]


class GatewayError(Exception):
    """Root of the gateway's own errors."""


class OutboundError(GatewayError):
    """An outbound call failed past its retries.

    ``ambiguous`` is true when the request may have taken effect (a read
    timeout after the body was sent): such a call must not be repeated blindly.
    """

    def __init__(self, message: str, *, status: int | None = None, ambiguous: bool = False):
        super().__init__(message)
        self.status = status
        self.ambiguous = ambiguous


class ChatwootError(OutboundError):
    """Chatwoot's REST API refused or failed a call."""


class BotError(OutboundError):
    """The bot failed, timed out or answered something unusable."""


class TranscriptionError(OutboundError):
    """A voice note could not be fetched or transcribed (it reaches the bot without text)."""


class MediaError(OutboundError):
    """Media at an address could not be fetched (refused address, status, size, type, time)."""


class LeaseLost(GatewayError):
    """The task lost its lease: another drainer owns the conversation now."""
