"""``bastion dev-cert``: the pair it writes, how it writes it, and when it refuses to."""

from __future__ import annotations

import ipaddress
import os
import ssl
import stat
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID

from bastion.devcert import (
    CERT_FILE_NAME,
    KEY_FILE_NAME,
    DevCertExists,
    DevCertificate,
    write_dev_certificate,
)
from tests.test_cli import run_bastion


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def load_pair(pair: DevCertificate) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    certificate = x509.load_pem_x509_certificate(pair.certfile.read_bytes())
    key = serialization.load_pem_private_key(pair.keyfile.read_bytes(), password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    return certificate, key


def matches(certificate: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> bool:
    public_key = certificate.public_key()
    assert isinstance(public_key, ec.EllipticCurvePublicKey)
    return public_key.public_numbers() == key.public_key().public_numbers()


@pytest.fixture
def open_umask() -> Iterator[None]:
    """A umask that lets everyone read new files, as a careless shell might have."""
    previous = os.umask(0)
    try:
        yield
    finally:
        os.umask(previous)


def test_writes_a_private_pair_into_a_new_private_data_dir(
    tmp_path: Path, open_umask: None
) -> None:
    data_dir = tmp_path / "deep" / "data"
    pair = write_dev_certificate(data_dir)
    assert pair.certfile == (data_dir / CERT_FILE_NAME).absolute()
    assert pair.keyfile == (data_dir / KEY_FILE_NAME).absolute()
    assert mode(data_dir) == 0o700
    assert mode(pair.keyfile) == 0o600
    assert mode(pair.certfile) == 0o600
    assert sorted(p.name for p in data_dir.iterdir()) == [CERT_FILE_NAME, KEY_FILE_NAME]


def test_narrows_an_existing_data_dir(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir(mode=0o755)
    data_dir.chmod(0o755)
    write_dev_certificate(data_dir)
    assert mode(data_dir) == 0o700


def test_the_key_is_never_readable_by_others_even_briefly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, open_umask: None
) -> None:
    """Each file is complete and 0600 before it takes its name."""
    seen: list[tuple[str, int, int]] = []
    real_replace = os.replace

    def spying_replace(source: str, destination: str) -> None:
        source_path = Path(source)
        assert source_path.parent == Path(destination).parent  # same file system: atomic
        seen.append((Path(destination).name, mode(source_path), source_path.stat().st_size))
        real_replace(source, destination)

    monkeypatch.setattr(os, "replace", spying_replace)
    pair = write_dev_certificate(tmp_path / "data")
    assert [(name, file_mode) for name, file_mode, _ in seen] == [
        (KEY_FILE_NAME, 0o600),
        (CERT_FILE_NAME, 0o600),
    ]
    assert seen[0][2] == pair.keyfile.stat().st_size
    assert seen[1][2] == pair.certfile.stat().st_size


def test_the_certificate(tmp_path: Path) -> None:
    now = datetime(2030, 1, 1, tzinfo=UTC)
    pair = write_dev_certificate(tmp_path / "data", now=now)
    certificate, _ = load_pair(pair)

    names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.DNSName) == ["localhost"]
    assert set(names.get_values_for_type(x509.IPAddress)) == {
        ipaddress.ip_address("127.0.0.1"),
        ipaddress.ip_address("::1"),
    }

    constraints = certificate.extensions.get_extension_for_class(x509.BasicConstraints)
    assert constraints.critical
    assert constraints.value.ca is False
    usage = certificate.extensions.get_extension_for_class(x509.KeyUsage)
    assert usage.critical
    assert usage.value.digital_signature
    assert not usage.value.key_cert_sign
    assert not usage.value.key_encipherment
    extended = certificate.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(extended) == [ExtendedKeyUsageOID.SERVER_AUTH]

    public_key = certificate.public_key()
    assert isinstance(public_key, ec.EllipticCurvePublicKey)
    assert isinstance(public_key.curve, ec.SECP256R1)
    assert isinstance(certificate.signature_hash_algorithm, hashes.SHA256)
    certificate.verify_directly_issued_by(certificate)  # self-signed

    assert certificate.not_valid_before_utc <= now
    assert certificate.not_valid_before_utc > now - timedelta(hours=1)
    lifetime = certificate.not_valid_after_utc - certificate.not_valid_before_utc
    assert lifetime == timedelta(days=90)
    assert pair.not_valid_after == certificate.not_valid_after_utc


def test_the_key_matches_the_certificate(tmp_path: Path) -> None:
    pair = write_dev_certificate(tmp_path / "data")
    certificate, key = load_pair(pair)
    assert matches(certificate, key)
    # And OpenSSL agrees (it checks the pair when loading it).
    ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(pair.certfile, pair.keyfile)


@pytest.mark.parametrize("existing", [CERT_FILE_NAME, KEY_FILE_NAME])
def test_refuses_to_overwrite(tmp_path: Path, existing: str) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir(mode=0o700)
    (data_dir / existing).write_bytes(b"precious")
    with pytest.raises(DevCertExists) as refused:
        write_dev_certificate(data_dir)
    assert refused.value.path == (data_dir / existing).absolute()
    assert (data_dir / existing).read_bytes() == b"precious"
    assert [p.name for p in data_dir.iterdir()] == [existing]  # nothing else written


def test_force_replaces_the_pair(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    first = write_dev_certificate(data_dir)
    old_key = first.keyfile.read_bytes()
    old_certificate = first.certfile.read_bytes()
    first.keyfile.chmod(0o644)  # e.g. loosened by hand: the new key must not inherit that
    second = write_dev_certificate(data_dir, force=True)
    assert second.keyfile.read_bytes() != old_key
    assert second.certfile.read_bytes() != old_certificate
    assert mode(second.keyfile) == 0o600
    certificate, key = load_pair(second)
    assert matches(certificate, key)


def test_the_command(tmp_path: Path) -> None:
    data_dir = tmp_path / "custom"
    env = {"BASTION_DATA_DIR": str(data_dir)}
    created = run_bastion("dev-cert", cwd=tmp_path, env=env)
    assert created.returncode == 0, created.stderr
    certfile, keyfile = data_dir / CERT_FILE_NAME, data_dir / KEY_FILE_NAME
    assert f"certificate: {certfile}" in created.stdout
    assert f"private key: {keyfile}" in created.stdout
    assert f"bastion serve --ssl-certfile {certfile} --ssl-keyfile {keyfile}" in created.stdout
    assert "development only" in created.stdout
    assert mode(keyfile) == 0o600
    key = keyfile.read_bytes()

    again = run_bastion("dev-cert", cwd=tmp_path, env=env)
    assert again.returncode == 1
    assert "exists already" in again.stderr
    assert "--force" in again.stderr
    assert keyfile.read_bytes() == key

    forced = run_bastion("dev-cert", "--force", cwd=tmp_path, env=env)
    assert forced.returncode == 0, forced.stderr
    assert keyfile.read_bytes() != key


def test_the_command_defaults_to_the_default_data_dir(tmp_path: Path) -> None:
    result = run_bastion("dev-cert", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / ".bastion" / CERT_FILE_NAME).is_file()
    assert (tmp_path / ".bastion" / KEY_FILE_NAME).is_file()


def test_the_command_says_when_it_cannot_write(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    result = run_bastion("dev-cert", cwd=tmp_path, env={"BASTION_DATA_DIR": str(blocker)})
    assert result.returncode == 1
    assert "cannot write to the data dir" in result.stderr
    assert "Traceback" not in result.stderr


def test_the_help_says_local_use_only(tmp_path: Path) -> None:
    result = run_bastion("dev-cert", "--help", cwd=tmp_path)
    assert result.returncode == 0
    assert "local development only" in " ".join(result.stdout.split())
