from app.store import keys


def test_every_key_format_is_exact() -> None:
    assert keys.queue("acme", 42) == "acme:webhook_queue:42"
    assert keys.lease("acme", 42) == "acme:webhook_active_task:42"
    assert keys.processing("acme", 42) == "acme:webhook_processing:42"
    assert keys.seen_message("acme", 9001) == "acme:webhook_seen:9001"
    assert keys.seen_delivery("acme", "3f0c") == "acme:webhook_seen:delivery:3f0c"
    assert keys.dead_letters("acme") == "acme:webhook_dead"
    assert keys.conversation_index("acme") == "acme:webhook_conversations"
    assert keys.ledger("acme", 42) == "acme:webhook_ledger:42"
    assert keys.workers_stuck() == "gateway:workers_stuck"
    assert keys.handoff("acme", 42) == "acme:webhook_handoff:42"
    assert keys.status("acme", 42) == "acme:webhook_status:42"
    assert keys.assignee("acme", 42) == "acme:webhook_assignee:42"
    assert keys.due("acme") == "acme:webhook_due"
    assert keys.bot_history("acme", 42) == "acme:bot_history:42"
    assert keys.outbox("acme") == "acme:webhook_outbox"
    assert keys.stats("acme") == "acme:webhook_stats"
    assert keys.own_reply("acme", 777) == "acme:webhook_own:777"
    assert keys.own_pending("acme", 42) == "acme:webhook_own_pending:42"
    assert keys.sessions("acme") == "acme:webhook_sessions"
    assert keys.session_accounts("acme") == "acme:webhook_session_accounts"
    assert keys.histograms("acme") == "acme:webhook_histograms"
    assert keys.gauges("acme") == "acme:webhook_gauges"
    assert keys.paused("acme", 42) == "acme:webhook_paused:42"
    assert keys.away("acme", 42) == "acme:webhook_away:42"
    assert keys.counter_history("acme") == "acme:webhook_counter_history"
    assert keys.bot_calls_day("acme", "2026-11-26") == "acme:webhook_bot_calls:2026-11-26"
    assert keys.gap_histogram("acme") == "acme:webhook_gaps"
    assert keys.fragment_log("acme") == "acme:webhook_fragments"
    assert keys.last_fragment("acme") == "acme:webhook_last_fragment"
    assert keys.turns("acme") == "acme:webhook_turns"
    assert keys.pace("acme", "contact-7") == "acme:webhook_pace:contact-7"
    assert keys.worker_heartbeats() == "gateway:worker_heartbeats"


def test_every_key_function_is_exported() -> None:
    """``keys.__all__`` is the list of every key the gateway writes: a key function left
    out of it is a key nobody reviewing the list sees."""
    import inspect

    defined = {
        name
        for name, value in vars(keys).items()
        if inspect.isfunction(value) and value.__module__ == keys.__name__ and not name.startswith("_")
    }
    assert defined <= set(keys.__all__)
