"""Settings: read the environment (or COMPANIES_FILE) once, validate, pass in.

A wrong value raises ``ConfigError`` whose message names the variable; the
processes print it and stop (``python -m app check-config`` does the same for
start.sh before anything starts).

Each setting is declared once: a dataclass field with its default and, in its
``metadata``, the parser that reads it from the environment (NAME in upper case)
or from a COMPANIES_FILE object (lower case). pydantic-settings does this with
typed fields and errors naming the field, and was weighed: it would add
pydantic-core (a compiled package of several MB) to a small image, its
environment and JSON sources would still need this module's two spellings and
cross-field rules (max wait ≥ window, a URL required by the backend), and its
messages name a field path rather than the variable an operator sets. A
dataclass with one parser per field keeps messages like "BOT_URL must be an
http(s) URL, got 'x'" and no dependency.
"""

from app.settings.company import CompanyConfig
from app.settings.fields import (
    BotBackend,
    BotMode,
    ConfigError,
    ContextPart,
    Integration,
    WindowMode,
    is_bcrypt,
)
from app.settings.load import load_settings
from app.settings.process import Settings

__all__ = [
    "BotBackend",
    "BotMode",
    "CompanyConfig",
    "ConfigError",
    "ContextPart",
    "Integration",
    "Settings",
    "WindowMode",
    "is_bcrypt",
    "load_settings",
]
