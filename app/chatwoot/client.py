"""Chatwoot's REST API as the gateway uses it, plus the dry-run outbox.

Endpoints (Chatwoot v4.16, header ``api_access_token``):
``POST /api/v1/accounts/{account}/conversations/{id}/messages``,
``.../toggle_typing_status`` and ``.../toggle_status``. Message creation is
not idempotent, so a read timeout there is never retried blindly.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any, Protocol

import redis
import requests

from app.errors import ChatwootError
from app.outbound import new_session, post_json
from app.settings import CompanyConfig
from app.store import keys

__all__ = ["ChatwootClient", "DryRunOutbox", "Replier", "make_replier"]

log = logging.getLogger(__name__)
TYPING_TIMEOUT_SECONDS = 2.0
OUTBOX_KEEP = 1000


Choices = tuple[tuple[str, str], ...]  # (title, value) of an input_select message
File = tuple[str, bytes, str]  # (file name, bytes, content type) of an attachment


class Replier(Protocol):
    def create_message(
        self,
        account_id: int,
        conversation_id: str,
        content: str,
        *,
        choices: Choices = (),
        files: tuple[File, ...] = (),
        private: bool = False,
        template: dict[str, Any] | None = None,
    ) -> int | None: ...

    def typing(self, account_id: int, conversation_id: str, on: bool) -> None: ...

    def open_conversation(self, account_id: int, conversation_id: str) -> None: ...

    def assign_team(self, account_id: int, conversation_id: str, team_id: int) -> None: ...

    def add_note(self, account_id: int, conversation_id: str, content: str) -> None: ...

    def find_replies(
        self, account_id: int, conversation_id: str, content: str, after_id: int
    ) -> list[int] | None: ...


class ChatwootClient:
    """Posts replies, typing status and handoffs to one Chatwoot account."""

    def __init__(
        self, config: CompanyConfig, *, timeout: float, retries: int, session: requests.Session | None = None
    ) -> None:
        assert config.chatwoot_base_url and config.chatwoot_api_token
        self._base = config.chatwoot_base_url
        self._headers = {"api_access_token": config.chatwoot_api_token}
        self._timeout = timeout
        self._retries = retries
        self._session = session or new_session()

    def _url(self, account_id: int, conversation_id: str, action: str) -> str:
        return f"{self._base}/api/v1/accounts/{account_id}/conversations/{conversation_id}/{action}"

    def _post(
        self,
        account_id: int,
        conversation_id: str,
        action: str,
        body: dict[str, object],
        *,
        retries: int,
        idempotent: bool = False,
        timeout: float | None = None,
        files: tuple[File, ...] = (),
    ) -> requests.Response:
        """POST ``body`` to one of the conversation's endpoints, with this account's token
        (multipart, ``attachments[]``, when there are ``files``)."""
        return post_json(
            self._session,
            self._url(account_id, conversation_id, action),
            body,
            error=ChatwootError,
            timeout=self._timeout if timeout is None else timeout,
            retries=retries,
            headers=self._headers,
            idempotent=idempotent,
            files=[("attachments[]", f) for f in files] or None,
        )

    def create_message(
        self,
        account_id: int,
        conversation_id: str,
        content: str,
        *,
        choices: Choices = (),
        files: tuple[File, ...] = (),
        private: bool = False,
        template: dict[str, Any] | None = None,
    ) -> int | None:
        """Post an outgoing reply — with ``choices``, as ``input_select`` (WhatsApp: up
        to three buttons, else a list); with ``files``, as a multipart message carrying
        them; ``private``, as a note only the agents see (BOT_MODE=draft) — and return
        the id Chatwoot gave it, if it said."""
        body: dict[str, object] = {"content": content, "message_type": "outgoing", "private": private}
        if template:  # WhatsApp's template, the one message it delivers past the 24-hour window
            body["template_params"] = template
        if choices:
            body["content_type"] = "input_select"
            body["content_attributes"] = {"items": [{"title": t, "value": v} for t, v in choices]}
        if files:
            body["private"] = "true" if private else "false"  # a form field: Rails reads "false", not "False"
        response = self._post(
            account_id, conversation_id, "messages", body, retries=self._retries, files=files
        )
        try:
            body = response.json()
        except ValueError:
            log.warning("chatwoot reply created but body is not JSON conversation=%s", conversation_id)
            return None
        message_id = body.get("id") if isinstance(body, dict) else None
        return message_id if isinstance(message_id, int) else None

    def find_replies(
        self, account_id: int, conversation_id: str, content: str, after_id: int
    ) -> list[int] | None:
        """Ids of outgoing messages holding exactly ``content`` created after the message
        ``after_id``; None when it cannot be told.

        Reads the conversation's latest messages (``GET .../messages``). Only a
        user access token may: an agent-bot token is refused, and then the
        answer is None (unknown), never a guess. "After" is told by id, never by
        clock: Chatwoot's message ids come from one sequence, so a reply created
        after the contact's message ``after_id`` has a higher id, whatever the
        two machines' clocks say.
        """
        url = self._url(account_id, conversation_id, "messages")
        try:
            response = self._session.get(
                url, headers=self._headers, timeout=(3.05, self._timeout), allow_redirects=False
            )
        except requests.RequestException as exc:
            log.info("read-back failed conversation=%s error=%s", conversation_id, type(exc).__name__)
            return None
        if response.status_code != 200:
            return None
        try:
            messages = response.json()["payload"]
        except (ValueError, KeyError, TypeError):
            return None
        if not isinstance(messages, list):
            return None
        return [m["id"] for m in messages if _is_our_reply(m, content, after_id)]

    def typing(self, account_id: int, conversation_id: str, on: bool) -> None:
        """Best effort: one short attempt, failures only logged."""
        try:
            body = {"typing_status": "on" if on else "off", "is_private": False}
            self._post(
                account_id,
                conversation_id,
                "toggle_typing_status",
                body,
                retries=0,
                idempotent=True,
                timeout=TYPING_TIMEOUT_SECONDS,
            )
        except ChatwootError as exc:
            log.info("typing status not set conversation=%s error=%s", conversation_id, exc)

    def open_conversation(self, account_id: int, conversation_id: str) -> None:
        """Hand the conversation to humans (status ``open``)."""
        self._post(
            account_id,
            conversation_id,
            "toggle_status",
            {"status": "open"},
            retries=self._retries,
            idempotent=True,
        )

    def assign_team(self, account_id: int, conversation_id: str, team_id: int) -> None:
        """Assign the conversation to a team (an agent-bot token may: ``assignments#create``)."""
        self._post(
            account_id,
            conversation_id,
            "assignments",
            {"team_id": team_id},
            retries=self._retries,
            idempotent=True,
        )

    def add_note(self, account_id: int, conversation_id: str, content: str) -> None:
        """A private note for the agents (not sent to the contact)."""
        body = {"content": content, "message_type": "outgoing", "private": True}
        self._post(account_id, conversation_id, "messages", body, retries=0)  # a create: never retried


def _is_our_reply(message: object, content: str, after_id: int) -> bool:
    if not isinstance(message, dict) or message.get("private") is True:
        return False
    message_id = message.get("id")
    outgoing = message.get("message_type") in (1, "outgoing")
    newer = isinstance(message_id, int) and not isinstance(message_id, bool) and message_id > after_id
    return outgoing and newer and message.get("content") == content


class DryRunOutbox:
    """Stands in for Chatwoot when ``CHATWOOT_BASE_URL`` is unset: keeps replies in Redis."""

    def __init__(self, client: redis.Redis, company: str) -> None:
        self._redis = client
        self._company = company

    def _record(self, kind: str, account_id: int, conversation_id: str, **extra: object) -> None:
        entry = {
            "kind": kind,
            "account_id": account_id,
            "conversation_id": conversation_id,
            "at": time.time(),
        }
        entry.update(extra)
        pipe = self._redis.pipeline()
        pipe.rpush(keys.outbox(self._company), json.dumps(entry, ensure_ascii=False))
        pipe.ltrim(keys.outbox(self._company), -OUTBOX_KEEP, -1)
        pipe.execute()

    def create_message(
        self,
        account_id: int,
        conversation_id: str,
        content: str,
        *,
        choices: Choices = (),
        files: tuple[File, ...] = (),
        private: bool = False,
        template: dict[str, Any] | None = None,
    ) -> int | None:
        extra: dict[str, object] = {"private": True} if private else {}
        if template:
            extra["template"] = template["name"]
        if choices:
            extra["choices"] = [title for title, _ in choices]
        if files:
            extra["files"] = [{"name": name, "bytes": len(data), "type": kind} for name, data, kind in files]
        self._record("message", account_id, conversation_id, content=content, **extra)
        log.info(
            "dry-run reply kept company=%s conversation=%s chars=%d",
            self._company,
            conversation_id,
            len(content),
        )
        log.debug("dry-run reply content=%r", content)
        return None

    def typing(self, account_id: int, conversation_id: str, on: bool) -> None:
        return None

    def find_replies(
        self, account_id: int, conversation_id: str, content: str, after_id: int
    ) -> list[int] | None:
        return None  # the outbox is a log, not a conversation: never skip a reply on its word

    def open_conversation(self, account_id: int, conversation_id: str) -> None:
        self._record("handoff", account_id, conversation_id)
        log.info("dry-run handoff company=%s conversation=%s", self._company, conversation_id)

    def assign_team(self, account_id: int, conversation_id: str, team_id: int) -> None:
        self._record("team", account_id, conversation_id, team_id=team_id)

    def add_note(self, account_id: int, conversation_id: str, content: str) -> None:
        self._record("note", account_id, conversation_id, content=content)


def make_replier(config: CompanyConfig, client: redis.Redis, *, timeout: float, retries: int) -> Replier:
    if config.dry_run:
        return DryRunOutbox(client, config.company_id)
    return ChatwootClient(config, timeout=timeout, retries=retries)
