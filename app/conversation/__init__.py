"""Who answers a conversation, the bot or a human: the ownership table
(``ownership``), the gateway's own messages told from a human's (``own``), and bot
sessions (``sessions``)."""
