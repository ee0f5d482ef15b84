"""A self-signed certificate for local HTTPS (``bastion dev-cert``): development only.

The pair goes into the data dir: ``dev-cert.pem`` and ``dev-key.pem``, both 0600 in a 0700
directory. Each file is written to a fresh 0600 temporary file beside it and renamed into
place, so the private key is never readable by others, not even for a moment, and a reader
never sees half a file. An existing pair is kept unless ``force`` is given.

The certificate is a leaf, not a CA (basicConstraints CA:FALSE): trusting it lets a client
accept this one server certificate and nothing else. ECDSA P-256 with SHA-256, because every
browser and TLS library accepts it (Ed25519 certificates are not accepted by browsers). Valid
for ``localhost``, ``127.0.0.1`` and ``::1``, for 90 days.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from bastion.storage.files import PRIVATE_FILE_MODE, ensure_private_dir

CERT_FILE_NAME = "dev-cert.pem"
KEY_FILE_NAME = "dev-key.pem"
VALIDITY = timedelta(days=90)
# Issued a little in the past, so a client whose clock is slightly behind accepts it too.
BACKDATE = timedelta(minutes=5)
DNS_NAMES = ("localhost",)
IP_ADDRESSES = ("127.0.0.1", "::1")
COMMON_NAME = "localhost"
ORGANIZATION = "bastion development certificate"


class DevCertExists(Exception):
    """A certificate or key is already there, and replacing it was not asked for."""

    def __init__(self, path: Path) -> None:
        super().__init__(f"{path} exists already")
        self.path = path


@dataclass(frozen=True, slots=True)
class DevCertificate:
    """Where the pair was written, and until when the certificate is valid."""

    certfile: Path
    keyfile: Path
    not_valid_after: datetime


def dev_cert_paths(data_dir: Path) -> tuple[Path, Path]:
    """The certificate's and the key's path in ``data_dir``."""
    return data_dir / CERT_FILE_NAME, data_dir / KEY_FILE_NAME


def write_dev_certificate(
    data_dir: Path, *, force: bool = False, now: datetime | None = None
) -> DevCertificate:
    """Writes a new key and a self-signed certificate for it into ``data_dir``.

    Raises ``DevCertExists`` when either file exists and ``force`` is false; nothing is
    written then. ``OSError`` when the data dir cannot be created or written.
    """
    certfile, keyfile = (path.absolute() for path in dev_cert_paths(data_dir))
    if not force:
        for path in (certfile, keyfile):
            if path.exists() or path.is_symlink():
                raise DevCertExists(path)
    ensure_private_dir(certfile.parent)
    issued = (now or datetime.now(UTC)) - BACKDATE
    key = ec.generate_private_key(ec.SECP256R1())
    certificate = _self_signed(key, not_valid_before=issued, not_valid_after=issued + VALIDITY)
    _write_private(
        keyfile,
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
    )
    _write_private(certfile, certificate.public_bytes(serialization.Encoding.PEM))
    return DevCertificate(certfile, keyfile, certificate.not_valid_after_utc)


def _self_signed(
    key: ec.EllipticCurvePrivateKey, *, not_valid_before: datetime, not_valid_after: datetime
) -> x509.Certificate:
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, COMMON_NAME),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, ORGANIZATION),
        ]
    )
    public_key = key.public_key()
    alternative_names: list[x509.GeneralName] = [x509.DNSName(dns_name) for dns_name in DNS_NAMES]
    alternative_names += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in IP_ADDRESSES]
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_valid_before)
        .not_valid_after(not_valid_after)
        .add_extension(x509.SubjectAlternativeName(alternative_names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(public_key), critical=False
        )
        .sign(key, hashes.SHA256())
    )


def _write_private(path: Path, content: bytes) -> None:
    """``content`` into ``path``, 0600 from its first byte, replacing any file there."""
    # mkstemp creates the file 0600 whatever the umask; the rename is atomic.
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(descriptor, "wb") as file:
            file.write(content)
            file.flush()
            os.fsync(file.fileno())
        os.chmod(temporary, PRIVATE_FILE_MODE)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise
