"""What an operator can see and do: the command line (``cli``), the queries behind
it (``queries``), dead letters (``dead_letters``), the status page (``status``) and
health and metrics (``health``)."""
