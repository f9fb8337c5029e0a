"""What the entry floor (views, CLI commands, jobs) hands to the services below it.

Services never read ``flask.current_app`` or ``flask.g``. They receive the secret box as an argument
(views and CLI commands get it from :func:`secret_box`), and they find the acting API token and the
request id in the :class:`~mdmserver.audit.service.AuditContext` that :func:`init_app` binds to the
request's session. This module is the one place that turns the running application into those
collaborators (the pki views excepted: see ``pki.views._secret_box``).
"""

from __future__ import annotations

from flask import Flask, current_app

from mdmserver.api.auth import current_token
from mdmserver.api.requests import request_id
from mdmserver.apps.manifests import CHUNK_SIZE
from mdmserver.apps.storage import DirectoryPackageStore, PackageStore, package_root
from mdmserver.audit.service import AuditContext, set_audit_context
from mdmserver.db import db, on_session, session_in_use
from mdmserver.pki.secretbox import SecretBox
from mdmserver.pki.service import load_secret_box


def secret_box() -> SecretBox:
    """The secret box of the running application (its key file, created on first use, mode 0600)."""
    return load_secret_box(current_app.config["SECRET_KEY_FILE"])


def public_url() -> str:
    """The server's public base URL (what devices reach it by: enrollment, app manifests and packages)."""
    return current_app.config["PUBLIC_URL"]


def package_store() -> PackageStore:
    """Where uploaded app packages are kept: ``<data_dir>/apps``, content-addressed by SHA-256."""
    return DirectoryPackageStore(package_root(current_app.config["DATA_DIR"]), chunk_size=CHUNK_SIZE)


def init_app(app: Flask) -> None:
    """Bind the audit context to each request's session (after the token check) and unbind it at the
    end, as ``api.transactions`` declares the session's transaction mode: when the request creates its
    session (:func:`mdmserver.db.on_session`)."""

    @app.before_request
    def _bind_audit_context() -> None:
        context = AuditContext(token=current_token(), request_id=request_id())
        on_session(db.session, lambda session: set_audit_context(session, context))

    @app.teardown_request
    def _unbind_audit_context(_exc: BaseException | None) -> None:
        session = session_in_use(db.session)
        if session is not None:
            set_audit_context(session, None)
