"""A PDF's text, in a process of its own: ``python -m app.pdf_text PAGES CHARS CPU_SECONDS
MEMORY_BYTES`` reads the PDF on stdin and writes ``{"text": …, "pages": <pages in the file>}`` on stdout.

A PDF comes from a contact, so from anyone: a hostile one can make a parser spin or
swell. Run apart, with a CPU and a memory limit of its own and a wall-clock timeout
(``app.bots.documents`` kills it past that), it cannot stall or exhaust the worker.
Only the first PAGES pages are read and the text stops at CHARS characters. It imports
nothing of the gateway, so it starts in a fraction of a second."""

from __future__ import annotations

import io
import json
import resource
import sys


def extract(data: bytes, max_pages: int, max_chars: int) -> dict[str, object]:
    from pypdf import PdfReader

    reader = PdfReader(io.BytesIO(data))
    texts: list[str] = []
    size = 0
    for page in reader.pages[:max_pages]:
        text = (page.extract_text() or "").strip()
        texts.append(text)
        size += len(text) + 2
        if size >= max_chars:
            break
    return {"text": "\n\n".join(t for t in texts if t)[:max_chars], "pages": len(reader.pages)}


def main() -> int:
    max_pages, max_chars, cpu_seconds, memory_bytes = (int(a) for a in sys.argv[1:5])
    # Set here, in the child, rather than by the parent between fork and exec (unsafe in
    # a worker full of threads): past them the kernel stops this process.
    resource.setrlimit(resource.RLIMIT_CPU, (cpu_seconds, cpu_seconds))
    resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))
    try:
        result = extract(sys.stdin.buffer.read(), max_pages, max_chars)
    except Exception as exc:  # any parser failure: the caller says why the bot gets no text
        sys.stderr.write(f"{type(exc).__name__}: {str(exc)[:200]}")
        return 3
    sys.stdout.write(json.dumps(result, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
