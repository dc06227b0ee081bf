import json

import pytest

from app.settings import ConfigError, load_settings

BASE = {"REDIS_URL": "redis://127.0.0.1:6379/0"}


def test_defaults() -> None:
    settings = load_settings(BASE)
    company = settings.company("default")
    assert company is not None
    assert (company.bot_backend, company.batch_window_seconds, company.batch_max_wait_seconds) == (
        "echo",
        10,
        30,
    )
    assert company.batch_max_avg_chars == 400 and company.max_queue_per_conversation == 200
    assert company.dry_run and settings.max_body_bytes == 1024 * 1024


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({"REDIS_URL": ""}, "REDIS_URL"),
        ({"REDIS_URL": "http://x"}, "REDIS_URL"),
        ({"BATCH_WINDOW_SECONDS": "ten"}, "BATCH_WINDOW_SECONDS"),
        ({"BATCH_WINDOW_SECONDS": "-1"}, "BATCH_WINDOW_SECONDS"),
        ({"BATCH_WINDOW_SECONDS": "nan"}, "BATCH_WINDOW_SECONDS"),
        ({"BATCH_WINDOW_SECONDS": "20", "BATCH_MAX_WAIT_SECONDS": "5"}, "BATCH_MAX_WAIT_SECONDS"),
        ({"BATCH_MAX_AVG_CHARS": "1.5"}, "BATCH_MAX_AVG_CHARS"),
        ({"BOT_BACKEND": "gpt"}, "BOT_BACKEND"),
        ({"BOT_BACKEND": "http"}, "BOT_URL"),
        ({"BOT_BACKEND": "http", "BOT_URL": "ftp://bot"}, "BOT_URL"),
        ({"BOT_BACKEND": "openai", "OPENAI_BASE_URL": "http://llm/v1"}, "OPENAI_MODEL"),
        ({"BOT_BACKEND": "python", "BOT_HANDLER": "no colon"}, "BOT_HANDLER"),
        ({"CHATWOOT_BASE_URL": "https://app.chatwoot.com"}, "CHATWOOT_API_TOKEN"),
        ({"COMPANY_ID": "a:b"}, "COMPANY_ID"),
        ({"MAX_BODY_BYTES": "0"}, "MAX_BODY_BYTES"),
        ({"LOG_LEVEL": "LOUD"}, "LOG_LEVEL"),
    ],
)
def test_bad_values_name_the_variable(env: dict[str, str], variable: str) -> None:
    with pytest.raises(ConfigError, match=variable):
        load_settings({**BASE, **env})


def test_companies_file(tmp_path) -> None:
    path = tmp_path / "companies.json"
    path.write_text(
        json.dumps(
            [
                {"company_id": "clinic", "webhook_token": "t1", "batch_window_seconds": 4},
                {
                    "company_id": "shop",
                    "chatwoot_webhook_secret": "s2",
                    "bot_backend": "http",
                    "bot_url": "http://bot/x",
                    "chatwoot_base_url": "https://cw.example",
                    "chatwoot_api_token": "k",
                },
            ]
        )
    )
    settings = load_settings({**BASE, "COMPANIES_FILE": str(path)})
    assert set(settings.companies) == {"clinic", "shop"}
    assert settings.companies["clinic"].batch_window_seconds == 4
    assert settings.companies["shop"].chatwoot_base_url == "https://cw.example"
    assert "s2" not in repr(settings.companies["shop"])  # secrets stay out of reprs and logs


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("not json", "not valid JSON"),
        ("[]", "non-empty list"),
        (
            '[{"company_id": "a", "bot_backnd": "echo"}]',
            r"COMPANIES_FILE\[0\] has unknown settings: bot_backnd",
        ),
        ('[{"webhook_token": "x"}]', r"COMPANIES_FILE\[0\].company_id is required"),
        ('[{"company_id": "a"}, {"company_id": "a"}]', "appears twice"),
        ('[{"company_id": "a", "batch_window_seconds": "x"}]', r"COMPANIES_FILE\[0\].batch_window_seconds"),
    ],
)
def test_bad_companies_file(tmp_path, content: str, message: str) -> None:
    path = tmp_path / "companies.json"
    path.write_text(content)
    with pytest.raises(ConfigError, match=message):
        load_settings({**BASE, "COMPANIES_FILE": str(path)})


def test_missing_companies_file() -> None:
    with pytest.raises(ConfigError, match="COMPANIES_FILE"):
        load_settings({**BASE, "COMPANIES_FILE": "/nonexistent/companies.json"})


def test_bot_prices_are_read_per_model_and_a_wrong_entry_is_named(redis_url: str) -> None:
    env = {"REDIS_URL": redis_url, "CHATWOOT_WEBHOOK_SECRET": "s"}
    prices = "gpt-4o-mini=0.15/0.60, meta/llama-3=0/0.2"
    config = load_settings({**env, "BOT_PRICES": prices}).company("default")
    price = config.price_of("gpt-4o-mini")
    assert price is not None and price.cost(1_000_000, 2_000_000) == pytest.approx(1.35)
    assert config.price_of("meta/llama-3") is not None and config.price_of("gpt-4o") is None
    for bad in ("gpt-4o-mini=0.15", "=1/2", "gpt=a/b", " , "):
        with pytest.raises(ConfigError, match="BOT_PRICES"):
            load_settings({**env, "BOT_PRICES": bad})
    with pytest.raises(ConfigError, match="BOT_SPEND_PER_DAY must be a number of 0 or more"):
        load_settings({**env, "BOT_SPEND_PER_DAY": "-1"})


def test_the_service_window_template_is_checked_and_names_its_problem(redis_url: str) -> None:
    env = {"REDIS_URL": redis_url, "CHATWOOT_WEBHOOK_SECRET": "s"}
    raw = '{"name": "retomar", "language": "pt_BR", "params": ["{name}", "{text}"]}'
    chosen = load_settings({**env, "SERVICE_WINDOW_TEMPLATE": raw}).company("default").service_window_template
    assert chosen is not None and chosen.render("Maria", "oi") == ("Maria", "oi")
    for bad, named in [
        ("retomar", "must be JSON"),
        ('{"language": "pt_BR"}', "must name the template"),
        ('{"name": "x", "language": "portugues"}', "language code"),
        ('{"name": "x", "language": "pt_BR", "params": [1]}', "at most 10 strings"),
        ('{"name": "x", "language": "pt_BR", "body": []}', "unknown member"),
    ]:
        with pytest.raises(ConfigError, match=f"SERVICE_WINDOW_TEMPLATE.*{named}"):
            load_settings({**env, "SERVICE_WINDOW_TEMPLATE": bad})


def test_companies_file_lists_and_objects_reach_their_parsers(tmp_path, redis_url: str) -> None:
    """A list of messages keeps its commas; a template may be an object; marks a list of numbers."""
    path = tmp_path / "companies.json"
    path.write_text(
        json.dumps(
            [
                {
                    "company_id": "acme",
                    "chatwoot_webhook_secret": "s",
                    "follow_up_after_minutes": [30, 240.5],
                    "follow_up_messages": ["Oi, ainda está aí?", "Posso ajudar, Maria?"],
                    "service_window_template": {"name": "retomar", "language": "pt_BR"},
                }
            ]
        )
    )
    config = load_settings({"REDIS_URL": redis_url, "COMPANIES_FILE": str(path)}).company("acme")
    assert config.follow_up_messages == ("Oi, ainda está aí?", "Posso ajudar, Maria?")
    assert config.follow_up_after_minutes == (30.0, 240.5)
    assert config.service_window_template is not None and config.service_window_template.name == "retomar"
