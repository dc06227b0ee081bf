"""WhatsApp's 24-hour customer-service window, as the poster checks it before each post:
free text reaches a WhatsApp contact only within SERVICE_WINDOW_HOURS of their last
message (noted by ENQUEUE in ``<company>:webhook_contact_wrote:<conversation>``, by
Redis's clock); past it the poster sends SERVICE_WINDOW_TEMPLATE, or leaves the humans
a note (``window_note``) and the conversation."""

from __future__ import annotations

import redis

from app.chatwoot.replies import Part, part_text
from app.settings import CompanyConfig
from app.store import keys

__all__ = ["window_closed", "window_note"]


def window_closed(client: redis.Redis, company: CompanyConfig, conversation: str) -> bool:
    """Has the contact of this WhatsApp conversation last written more than
    SERVICE_WINDOW_HOURS ago, by Redis's clock (free text would not be delivered)?"""
    hours = company.service_window_hours
    if not hours or company.drafts:  # a draft is a private note: no window applies
        return False
    pipe = client.pipeline(transaction=False)
    pipe.get(keys.contact_wrote(company.company_id, conversation))
    pipe.time()
    wrote, (seconds, micros) = pipe.execute()
    return wrote is not None and seconds + micros / 1e6 - float(wrote) > hours * 3600


def window_note(company: CompanyConfig, parts: tuple[Part, ...]) -> str:
    """The private note the humans get instead of an answer past the window."""
    said = "\n\n".join(part_text(p) for p in parts)
    return (
        f"WhatsApp's customer-service window is closed: the contact last wrote more than"
        f" {company.service_window_hours:g} h ago, so free text would not be delivered and the"
        f" bot's answer was not sent. Reach them with an approved template"
        f" (SERVICE_WINDOW_TEMPLATE sends one by itself). The bot would have said:\n\n{said}"
    )[:4000]
