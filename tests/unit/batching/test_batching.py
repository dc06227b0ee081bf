from app.batching.rules import close_at, join_fragments, segments
from app.chatwoot.messages import Attachment, StoredMessage


def msg(i: int, content: str, image: bool = False) -> StoredMessage:
    attachments = (Attachment("image", "https://x/a.jpg", None),) if image else ()
    return StoredMessage(i, "42", 1, content, received_at=0.0, attachments=attachments)


def test_close_at_sliding_window_with_max_wait() -> None:
    assert close_at(100.0, 100.0, 10, 30) == 110.0  # single message: one window
    assert close_at(100.0, 112.0, 10, 30) == 122.0  # slides with the latest fragment
    assert close_at(100.0, 125.0, 10, 30) == 130.0  # capped by the max wait


def test_join_short_fragments_with_spaces() -> None:
    assert join_fragments(["hi", " good morning ", "", "I want to book"]) == "hi good morning I want to book"


def test_join_medium_fragments_with_newlines() -> None:
    parts = ["a" * 60, "b" * 80]
    assert join_fragments(parts) == "\n".join(parts)


def test_join_long_fragments_with_blank_lines() -> None:
    parts = ["a" * 250, "b" * 300]
    assert join_fragments(parts) == "\n\n".join(parts)


def test_text_only_run_is_batched() -> None:
    result = segments([msg(1, "hi"), msg(2, "there")], max_avg_chars=400)
    assert len(result) == 1 and result[0].batched and result[0].text == "hi there"


def test_a_burst_with_media_is_one_call_in_order() -> None:
    """ "look" + an image with its caption + "is it bad?": one call, the caption in its place."""
    result = segments([msg(1, "look"), msg(2, "my rash", image=True), msg(3, "is it bad?")], 400)
    assert [(s.batched, [m.id for m in s.messages]) for s in result] == [(True, [1, 2, 3])]
    assert result[0].text == "look my rash is it bad?"


def test_an_album_is_one_call_holding_every_image_and_caption() -> None:
    album = [msg(1, "", image=True), msg(2, "the kitchen", image=True), msg(3, "", image=True)]
    (only,) = segments(album, 400)
    assert [m.id for m in only.messages] == [1, 2, 3] and only.text == "the kitchen"


def test_a_voice_note_transcript_joins_the_burst_in_order() -> None:
    voice = StoredMessage(
        2,
        "42",
        1,
        "",
        0.0,
        attachments=(Attachment("audio", "https://x/v.ogg", transcribed_text="tomorrow at 9"),),
    )
    (only,) = segments([msg(1, "I want to book"), voice, msg(3, "for Tuesday")], 400)
    assert only.text == "I want to book [voice note: tomorrow at 9] for Tuesday"


def test_long_texts_are_not_batched() -> None:
    result = segments([msg(1, "x" * 500), msg(2, "y" * 500)], max_avg_chars=400)
    assert [s.batched for s in result] == [False, False]
    assert [s.key for s in result] == ["1-1", "2-2"]
