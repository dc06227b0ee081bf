"""The gateway's exception tree, one root:

    GatewayError
    ├── OutboundError          an outbound call failed past its retries
    │   ├── ChatwootError      Chatwoot's REST API
    │   ├── BotError           the bot backend (http, openai, python)
    │   └── TranscriptionError fetching or transcribing a voice note
    └── LeaseLost              this task no longer holds the conversation's lease

Library exceptions (requests, redis) are converted at the boundary with
``raise ... from exc``. ``ConfigError`` (app.settings) is a ValueError raised
before anything runs.
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


class LeaseLost(GatewayError):
    """The task lost its lease: another drainer owns the conversation now."""
