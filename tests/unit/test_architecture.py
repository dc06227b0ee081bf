"""The import direction is a contract (pyproject.toml, ``[tool.importlinter]``):
import-linter checks it on every test run, so a module that reaches the wrong way
fails the suite, not a review."""

import subprocess
import sys
from pathlib import Path

from tests.support import ROOT


def test_the_import_contracts_hold():
    lint = Path(sys.executable).with_name("lint-imports")
    done = subprocess.run(
        [str(lint), "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "0 broken" in done.stdout


def test_every_error_of_the_gateway_has_one_root() -> None:
    """``except GatewayError`` catches every error the gateway raises of its own, and each
    is still the standard exception its callers catch (app/errors.py's drawing)."""
    from app.chatwoot.messages import InvalidPayload
    from app.chatwoot.signature import AuthError
    from app.errors import BotError, ChatwootError, GatewayError, LeaseLost, TranscriptionError
    from app.intake.spool import SpoolFull
    from app.settings import ConfigError

    for error in (
        BotError,
        ChatwootError,
        TranscriptionError,
        LeaseLost,
        ConfigError,
        InvalidPayload,
        AuthError,
    ):
        assert issubclass(error, GatewayError), error
    assert issubclass(SpoolFull, GatewayError) and issubclass(SpoolFull, OSError)
    assert issubclass(ConfigError, ValueError) and issubclass(InvalidPayload, ValueError)


def test_the_design_doc_draws_the_layers_the_contract_checks() -> None:
    """docs/design.md's picture of the layers is the contract's, not a copy that drifts."""
    import re
    import tomllib

    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    (layers,) = [c["layers"] for c in config["tool"]["importlinter"]["contracts"] if c["type"] == "layers"]
    doc = (ROOT / "docs" / "design.md").read_text()
    drawn = re.search(r"top to bottom:\n\n```\n(.*?)\n```", doc, re.S)
    assert drawn, "docs/design.md has no drawing of the layers"
    assert drawn.group(1).splitlines() == [layer.replace("app.", "") for layer in layers]
