"""What happens to a webhook: the view (``webhook``), acceptance into Redis
(``accept``), and the local spool for when Redis is away (``spool``)."""
