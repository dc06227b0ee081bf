import json
import logging

from app.logs import JsonFormatter


def test_json_lines_carry_the_fields_of_the_message() -> None:
    record = logging.LogRecord(
        "app.drain",
        logging.INFO,
        __file__,
        1,
        "batch answered company=%s conversation=%s task=%s",
        ("acme", "42", "t-1"),
        None,
    )
    line = json.loads(JsonFormatter().format(record))
    assert line["level"] == "INFO" and line["logger"] == "app.drain"
    assert (line["company"], line["conversation"], line["task"]) == ("acme", "42", "t-1")
    assert line["message"] == "batch answered company=acme conversation=42 task=t-1"
