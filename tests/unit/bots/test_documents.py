"""Documents (app/bots/documents.py, app/pdf_text.py): a real PDF read apart with its
caps, what is not a PDF or cannot be read named, the batch's limit; and an album of
images reaching the openai backend as image parts."""

from __future__ import annotations

import time

import pytest

from app.bots.documents import DOCUMENTS_PER_BATCH, DocumentReader, pdf_text, wants_document
from app.bots.openai import _user_content
from app.bots.reading import FAILED, TEXT
from app.chatwoot.messages import Attachment
from app.errors import MediaError
from app.settings import CompanyConfig
from tests.support import Stand
from tests.support.pdf import pdf

LINES = ["Boleto vence dia 10", "Valor 120 reais", "Pagina tres"]


def test_a_pdf_is_read_up_to_its_page_and_character_caps() -> None:
    data, later = pdf(LINES), time.monotonic() + 10
    assert pdf_text(data, 20, 10_000, later) == "\n\n".join(LINES)
    assert pdf_text(data, 1, 10_000, later) == LINES[0]
    assert pdf_text(data, 20, 12, later) == "Boleto vence"
    with pytest.raises(MediaError, match="the PDF could not be read: "):
        pdf_text(b"%PDF-1.4 garbage", 20, 100, later)
    with pytest.raises(MediaError, match="no time left"):
        pdf_text(data, 20, 100, time.monotonic())


def test_only_files_that_may_be_pdfs_are_fetched() -> None:
    def file(url: str, kind: str = "file") -> Attachment:
        return Attachment(kind, url)

    assert wants_document(file("https://cw.example/rails/active_storage/blobs/redirect/x/boleto.PDF"))
    assert wants_document(file("https://cw.example/rails/active_storage/blobs/redirect/x/boleto"))
    assert not wants_document(file("https://cw.example/blobs/planilha.xlsx"))
    assert not wants_document(file("https://cw.example/blobs/photo.jpg", "image"))
    assert not wants_document(Attachment("file", "https://cw.example/b.pdf", text="read already"))


def test_the_reader_says_why_and_stops_at_the_batchs_limit(stand: Stand) -> None:
    stand.reset()
    stand.media["boleto.pdf"] = pdf(LINES)
    stand.media["page.html"] = b"<html>sign in</html>"
    reader = DocumentReader(CompanyConfig(chatwoot_base_url=stand.url, document_timeout_seconds=1.5))
    blob = f"{stand.url}/rails/active_storage/blobs"
    assert reader.read(Attachment("file", f"{blob}/boleto.pdf")) == TEXT + "\n\n".join(LINES)
    assert (
        reader.read(Attachment("file", f"{blob}/page.html"))
        == FAILED + "the document is text/html, not a PDF: not read"
    )
    assert reader.read(Attachment("file", f"{blob}/missing.pdf")).startswith(
        FAILED + "fetching the document answered 404"
    )
    assert DOCUMENTS_PER_BATCH == 3
    assert reader.read(Attachment("file", f"{blob}/boleto.pdf")) == FAILED + "over the batch's 3 documents"


def test_an_album_reaches_the_openai_backend_as_one_image_part_each() -> None:
    request = {
        "text": "the kitchen",
        "messages": [
            {"attachments": [{"file_type": "image", "data_url": f"https://cw.example/{n}.jpg"}]}
            for n in range(3)
        ],
    }
    content = _user_content(request)
    assert content[0] == {"type": "text", "text": "the kitchen"}
    assert [p["image_url"]["url"] for p in content[1:]] == [f"https://cw.example/{n}.jpg" for n in range(3)]
