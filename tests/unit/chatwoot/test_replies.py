from app.chatwoot.replies import (
    WHATSAPP_MAX_CHARS,
    Rich,
    part_from_json,
    part_to_json,
    reply_parts,
    split_long,
    split_reply,
    typing_pause,
)


def test_paragraph_mode_splits_on_blank_lines_only() -> None:
    text = "Hi Maria!\n\nTuesday at 10 works.\nBring your card.\n \nSee you!"
    assert split_reply(text, "paragraphs") == [
        "Hi Maria!",
        "Tuesday at 10 works.\nBring your card.",
        "See you!",
    ]
    assert split_reply(text, "none") == [text]


def test_parts_over_the_whatsapp_limit_are_cut_at_sentence_ends() -> None:
    sentence = "This sentence is exactly fifty characters long ok. "
    text = sentence * 200  # 10,000 characters
    pieces = split_long(text)
    assert all(len(p) <= WHATSAPP_MAX_CHARS for p in pieces) and len(pieces) == 3
    assert all(p.endswith(".") for p in pieces)
    assert " ".join(pieces) == text.strip()


def test_unbroken_text_is_cut_hard() -> None:
    pieces = split_long("x" * 9000)
    assert [len(p) for p in pieces] == [4096, 4096, 808]


def test_long_parts_are_split_in_every_mode() -> None:
    assert len(split_reply("word " * 2000, "none")) == 3


def test_typing_pause_is_proportional_and_clamped() -> None:
    assert typing_pause("x" * 80, 40) == 2.0
    assert typing_pause("ok", 40) == 1.0
    assert typing_pause("x" * 4000, 40) == 8.0


def test_a_rich_reply_keeps_its_choices_on_its_last_piece_and_sends_one_file_a_message() -> None:
    long = "Frase longa. " * 400  # over WhatsApp's 4,096 characters: split
    choices = (("Sim", "yes"), ("Não", "no"))
    parts = reply_parts(["oi", Rich(long, choices)], "none")
    assert parts[0] == "oi" and all(isinstance(p, str) for p in parts[1:-1])
    assert isinstance(parts[-1], Rich) and parts[-1].choices == choices and len(parts) == 3
    media = reply_parts([Rich("Fotos", (), ("https://x.example/a.jpg", "https://x.example/b.jpg"))], "none")
    assert media == [
        Rich("Fotos", (), ("https://x.example/a.jpg",)),
        Rich("", (), ("https://x.example/b.jpg",)),
    ]
    for part in [*parts, *media]:
        assert part_from_json(part_to_json(part)) == part  # as the reply ledger keeps it
