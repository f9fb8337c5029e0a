"""``mdmserver push-cert request|import|show`` (``mdmserver push-worker`` is in ``mdmserver/cli.py``: it runs
:mod:`mdmserver.jobs`, which is above push)."""

from __future__ import annotations

from pathlib import Path

import click
from cryptography import x509 as cx509
from flask import current_app
from flask.cli import with_appcontext

from mdmserver.audit.service import record_event
from mdmserver.collaborators import secret_box
from mdmserver.db import db
from mdmserver.errors import AppError
from mdmserver.pki import push_request as preq
from mdmserver.pki import x509 as px
from mdmserver.push import service

_FILE = click.Path(exists=True, dir_okay=False, path_type=Path)


def _write_file(path: Path, data: bytes, mode: int = 0o644) -> None:
    path.write_bytes(data)
    path.chmod(mode)


def _vendor_material(cert_file: Path, key_file: Path, password: str | None, chain_file: Path | None):
    try:
        vendor_cert = px.load_certificate(cert_file.read_bytes())
        vendor_key = px.key_from_pem(key_file.read_bytes(), password.encode() if password else None)
        chain = cx509.load_pem_x509_certificates(chain_file.read_bytes()) if chain_file else []
    except (px.PKIError, ValueError) as exc:
        raise click.ClickException(f"the vendor certificate, key or chain cannot be read: {exc}") from None
    return vendor_cert, vendor_key, chain



@click.group("push-cert")
def push_cert_group() -> None:
    """The APNs MDM push certificate."""


@push_cert_group.command("request")
@click.option("--out", "out_dir", required=True,
              type=click.Path(file_okay=False, path_type=Path), help="Directory to write the request files into.")
@click.option("--common-name", default=None, help="CSR subject CN (default: the organization name + ' APNs').")
@click.option("--email", default=None, help="CSR subject e-mail address.")
@click.option("--vendor-cert", type=_FILE, help="Your MDM vendor (MDM CSR signing) certificate, PEM or DER.")
@click.option("--vendor-key", type=_FILE, help="The vendor certificate's private key, PEM.")
@click.option("--vendor-key-password", default=None, help="Password of an encrypted vendor key.")
@click.option("--vendor-chain", type=_FILE,
              help="PEM file with Apple's intermediate (WWDR) and root certificates, in that order.")
@with_appcontext
def push_cert_request(out_dir: Path, common_name: str | None, email: str | None, vendor_cert: Path | None,
                      vendor_key: Path | None, vendor_key_password: str | None, vendor_chain: Path | None) -> None:
    """Create the push certificate's key (stored encrypted) and write its CSR (push.csr); with
    --vendor-cert/--vendor-key also the signed request Apple's portal takes (push-request.b64)."""
    if (vendor_cert is None) != (vendor_key is None):
        raise click.UsageError("--vendor-cert and --vendor-key go together")
    vendor = _vendor_material(vendor_cert, vendor_key, vendor_key_password, vendor_chain) if vendor_cert else None
    organization = current_app.config.get("ORGANIZATION_NAME") or "mdmserver"
    key_id, csr = service.create_push_request(
        db.session, box=secret_box(), common_name=common_name or f"{organization} APNs",
        organization=organization, email=email,
    )
    signed = None
    if vendor is not None:
        try:
            signed = preq.sign_request(csr, *vendor)
        except px.PKIError as exc:
            db.session.rollback()
            raise click.ClickException(str(exc)) from None
    record_event(db.session, "push_certificate:request", "rsa_private_keys", key_id,
                 {"vendor_signed": signed is not None})
    db.session.commit()
    out_dir.mkdir(parents=True, exist_ok=True)
    _write_file(out_dir / "push.csr", preq.csr_to_pem(csr).encode())
    click.echo(f"key stored encrypted (private key id {key_id}); CSR written to {out_dir / 'push.csr'}")
    if signed is not None:
        _write_file(out_dir / "push-request.b64", signed)
        click.echo(f"signed request written to {out_dir / 'push-request.b64'}: upload it at "
                   "https://identity.apple.com/pushcert, then `mdmserver push-cert import` the certificate "
                   "Apple returns (no --key needed)")
    else:
        click.echo("no vendor certificate: have your MDM vendor sign push.csr (see docs/push-certificate.md), "
                   "upload the result at https://identity.apple.com/pushcert, then `mdmserver push-cert "
                   "import` the certificate Apple returns (no --key needed)")


@push_cert_group.command("import")
@click.argument("file", type=_FILE)
@click.option("--key", "key_file", type=_FILE,
              help="PEM private key, when it is neither inside FILE nor the key of a `push-cert request`.")
@click.option("--password", default=None, help="Password of the PKCS#12 file or of the encrypted key.")
@click.option("--replace-topic", is_flag=True,
              help="Accept a certificate for another topic: every enrolled device must then re-enroll.")
@with_appcontext
def push_cert_import(file: Path, key_file: Path | None, password: str | None, replace_topic: bool) -> None:
    """Import FILE (PEM certificate [+ key], DER certificate, or PKCS#12); the topic is read from its UID.

    The same topic as the current certificate is a renewal (every device keeps working); another
    topic is refused unless --replace-topic."""
    try:
        previous = service.get_push_topic(db.session)
        row = service.import_push_certificate(
            db.session,
            file.read_bytes(),
            key_file.read_bytes() if key_file else None,
            password.encode() if password else None,
            box=secret_box(),
            replace_topic=replace_topic,
        )
        orphaned = service.enrolled_on_topic(db.session, previous) if previous and previous != row.topic else 0
        record_event(
            db.session, "push_certificate:import", "push_certificates", row.id,
            {"topic": row.topic, "not_after": row.not_after.isoformat(),
             "renewal": previous == row.topic, "replaced_topic": previous if previous != row.topic else None},
        )
        db.session.commit()
    except AppError as exc:
        db.session.rollback()
        raise click.ClickException(exc.detail) from None
    info = service.certificate_info(row)
    kind = "renewed" if previous == row.topic else "imported"
    click.echo(f"push certificate {kind}: topic {row.topic}, expires {row.not_after:%Y-%m-%d} "
               f"({info['days_left']} days)")
    if previous and previous != row.topic:
        click.echo(f"warning: topic replaced ({previous} → {row.topic}): the {orphaned} enrolled devices "
                   "must re-enroll", err=True)
    if info["warning"]:
        click.echo(f"warning: {info['warning']}", err=True)


@push_cert_group.command("show")
@with_appcontext
def push_cert_show() -> None:
    """Show the active push certificate."""
    row = service.get_active_certificate(db.session)
    if row is None:
        raise click.ClickException("no push certificate imported")
    info = service.certificate_info(row)
    for key in ("topic", "subject", "not_after", "days_left", "warning", "stopped_at", "stop_reason"):
        if info[key] is not None:
            click.echo(f"{key}: {info[key]}")


commands = [push_cert_group]
