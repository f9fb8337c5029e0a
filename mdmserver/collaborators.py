"""What the entry floor (views, CLI commands, jobs) hands to the services below it.

Services never read ``flask.current_app`` or ``flask.g``: they receive the secret box as an argument
and find the acting token and request id in the session's audit context
(:func:`mdmserver.audit.service.set_audit_context`, bound by the request setup in
``mdmserver.api.auth``). This module is the one place that turns the running application into those
collaborators.
"""

from __future__ import annotations

from flask import current_app

from mdmserver.pki.secretbox import SecretBox
from mdmserver.pki.service import load_secret_box


def secret_box() -> SecretBox:
    """The secret box of the running application (its key file, created on first use, mode 0600)."""
    return load_secret_box(current_app.config["SECRET_KEY_FILE"])
