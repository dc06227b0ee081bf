from app import keys


def test_every_key_format_is_exact() -> None:
    assert keys.queue("acme", 42) == "acme:webhook_queue:42"
    assert keys.active_task("acme", 42) == "acme:webhook_active_task:42"
    assert keys.processing("acme", 42) == "acme:webhook_processing:42"
    assert keys.seen_message("acme", 9001) == "acme:webhook_seen:9001"
    assert keys.seen_delivery("acme", "3f0c") == "acme:webhook_seen:delivery:3f0c"
    assert keys.dead_letters("acme") == "acme:webhook_dead"
    assert keys.conversation_index("acme") == "acme:webhook_conversations"
    assert keys.sent_parts("acme", 42) == "acme:webhook_sent:42"
    assert keys.handoff("acme", 42) == "acme:webhook_handoff:42"
    assert keys.bot_history("acme", 42) == "acme:bot_history:42"
    assert keys.outbox("acme") == "acme:webhook_outbox"
    assert keys.stats("acme") == "acme:webhook_stats"
    assert keys.own_reply("acme", 777) == "acme:webhook_own:777"
    assert keys.own_pending("acme", 42) == "acme:webhook_own_pending:42"
    assert keys.sessions("acme") == "acme:webhook_sessions"
    assert keys.session_accounts("acme") == "acme:webhook_session_accounts"
    assert keys.histograms("acme") == "acme:webhook_histograms"
    assert keys.gap_histogram("acme") == "acme:webhook_gaps"
    assert keys.last_fragment("acme") == "acme:webhook_last_fragment"
    assert keys.worker_heartbeats() == "gateway:worker_heartbeats"
