"""Every attachment reaches the bot: a PDF a contact sends is read (its text in the bot's
text and in ``attachments[].text``, capped by DOCUMENT_MAX_PAGES / _CHARS), any other file
goes as its link, and what could not be read is said (``attachments[].error``) — never
dropped. Through the real pipeline: Chatwoot-shaped webhooks, real Redis, a real worker,
the local Chatwoot (its storage behind the blob redirect) and bot."""

from __future__ import annotations

import pytest
import redis

from app.store import keys
from tests import chatwoot_payloads as cw
from tests.conftest import fault_env, make_client, post_webhook
from tests.support import Stand, Worker, wait_for
from tests.support.pdf import pdf

pytestmark = pytest.mark.slow


def _call(stand: Stand, conversation: int) -> dict:
    (call,) = [c for c in stand.bot_calls if str(c["conversation_id"]) == str(conversation)]
    return call


def test_a_pdf_is_read_another_file_goes_as_a_link_and_a_broken_pdf_says_why(
    redis_url: str, rdb: redis.Redis, stand: Stand, workers: list[Worker], tmp_path
) -> None:
    stand.reset()
    stand.media["boleto.pdf"] = pdf(["Boleto vence dia 10", "Valor 120 reais", "Pagina tres"])
    stand.media["broken.pdf"] = b"%PDF-1.4 this is not really a pdf"
    env = fault_env(redis_url, stand, tmp_path, DOCUMENT_MAX_PAGES="2")
    workers.append(Worker(env, "documents").start(rdb))
    web = make_client(env)
    blob = f"{stand.url}/rails/active_storage/blobs"
    sheet = "https://files.example/planilha.xlsx"
    for body in (
        cw.message("segue o boleto", 901),
        cw.document(None, f"{blob}/boleto.pdf", 901),
        cw.document("e a planilha", sheet, 901),
        cw.document(None, f"{blob}/broken.pdf", 901),
    ):
        assert post_webhook(web, body).status_code == 202
    wait_for(lambda: stand.replies(901), timeout=20)
    call = _call(stand, 901)
    read, link, broken = (m["attachments"][0] for m in call["messages"][1:])
    assert read["text"] == "Boleto vence dia 10\n\nValor 120 reais"  # two pages of three
    assert "text" not in link and "error" not in link and link["data_url"] == sheet  # not fetched
    assert "text" not in broken and broken["error"].startswith("the PDF could not be read")
    assert call["text"].startswith("segue o boleto\n[document: Boleto vence dia 10\n\nValor 120 reais]")
    assert f"e a planilha\n[file: {sheet}]" in call["text"]
    assert f"[file: {blob}/broken.pdf (not read: the PDF could not be read" in call["text"]
    assert rdb.hget(keys.stats("default"), "documents_unread") == "1"


def test_documents_are_not_read_when_turned_off(
    redis_url: str, rdb: redis.Redis, stand: Stand, workers: list[Worker], tmp_path
) -> None:
    stand.reset()
    stand.media["boleto.pdf"] = pdf(["Boleto vence dia 10"])
    env = fault_env(redis_url, stand, tmp_path, DOCUMENT_MAX_PAGES="0")
    workers.append(Worker(env, "no-documents").start(rdb))
    web = make_client(env)
    url = f"{stand.url}/rails/active_storage/blobs/boleto.pdf"
    assert post_webhook(web, cw.document("o boleto", url, 902)).status_code == 202
    wait_for(lambda: stand.replies(902), timeout=15)
    (attachment,) = _call(stand, 902)["messages"][0]["attachments"]
    assert "text" not in attachment and _call(stand, 902)["text"] == f"o boleto\n[file: {url}]"
