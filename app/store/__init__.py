"""What is in Redis, and every atomic change of it: the key names (``keys``), the
client (``client``) and the Lua scripts (``scripts``)."""
