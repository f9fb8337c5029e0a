"""Stored private keys are parsed once per process (an enrollment loads the CA's and the server
identity's), and still opened with the secret box on every call."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from mdmserver.collaborators import secret_box
from mdmserver.pki import service
from mdmserver.pki.models import Certificate
from mdmserver.pki.secretbox import SecretBox, SecretBoxError


def test_a_stored_key_is_parsed_once_and_opened_every_time(app, db_session):
    ca_row = db_session.scalar(select(Certificate).where(Certificate.purpose == service.PURPOSE_CA))
    server_row = db_session.scalar(select(Certificate).where(Certificate.purpose == service.PURPOSE_SERVER))
    box = secret_box()
    first = service.load_private_key(ca_row.private_key, box)
    assert service.load_private_key(ca_row.private_key, box) is first
    other = service.load_private_key(server_row.private_key, box)
    assert other is not first and other.private_numbers() != first.private_numbers()
    # the cache is behind the box: another key cannot open the stored key, cached or not
    with pytest.raises(SecretBoxError):
        service.load_private_key(ca_row.private_key, SecretBox(SecretBox.generate_key()))
