"""Who may drain a conversation, and when: the lease (``lease``; its holder is a run,
not the conversation's owner), the dispatcher of due conversations (``dispatcher``),
the sweeper of stranded ones (``sweeper``) and the worker's housekeeping threads
(``housekeeping``)."""
