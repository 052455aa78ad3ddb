"""Throw-away TLS material for the warehouse stand-in: a self-signed CA and a server
certificate it signs, for ``127.0.0.1`` and ``localhost``.

``make_certs(directory)`` writes ``ca.pem`` (what clients trust: ``SSL_CERT_FILE`` or the
connector's ``_tls_trusted_ca_file``), ``server.pem`` (leaf + CA chain) and ``server.key``.
It uses the ``cryptography`` package when it is importable and the ``openssl`` command
otherwise (the project's virtualenv does not depend on ``cryptography``; Debian ships
``openssl``). Both paths make the same certificates: EC P-256, CA with basicConstraints
CA:TRUE and keyCertSign, leaf with SAN ``DNS:localhost, IP:127.0.0.1``, EKU serverAuth,
valid from an hour ago for ``days`` days.
"""
from __future__ import annotations

import datetime as dt
import ipaddress
import secrets
import subprocess
from dataclasses import dataclass
from pathlib import Path

CA_NAME = "Agent Turbo warehouse stand-in test CA"


@dataclass(frozen=True)
class CertFiles:
    ca_file: Path
    cert_file: Path
    key_file: Path


def make_certs(directory: Path, *, days: int = 7, backend: str | None = None) -> CertFiles:
    """Write a fresh CA and server certificate into ``directory``; ``backend`` forces
    ``"cryptography"`` or ``"openssl"`` (default: cryptography when importable)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    files = CertFiles(directory / "ca.pem", directory / "server.pem", directory / "server.key")
    if backend is None:
        try:
            import cryptography  # noqa: F401
            backend = "cryptography"
        except ImportError:
            backend = "openssl"
    if backend == "cryptography":
        _with_cryptography(files, days)
    elif backend == "openssl":
        _with_openssl(files, days)
    else:
        raise ValueError(f"unknown certificate backend {backend!r}")
    files.key_file.chmod(0o600)
    return files


def _with_cryptography(files: CertFiles, days: int) -> None:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = dt.datetime.now(dt.timezone.utc)
    start, end = now - dt.timedelta(hours=1), now + dt.timedelta(days=days)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, CA_NAME)])
    ca_ski = x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key())
    ca = (x509.CertificateBuilder()
          .subject_name(ca_name).issuer_name(ca_name)
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(start).not_valid_after(end)
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.KeyUsage(
              digital_signature=False, content_commitment=False, key_encipherment=False,
              data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
              encipher_only=False, decipher_only=False), critical=True)
          .add_extension(ca_ski, critical=False)
          .sign(ca_key, hashes.SHA256()))

    key = ec.generate_private_key(ec.SECP256R1())
    leaf = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
            .issuer_name(ca_name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(start).not_valid_after(end)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=True,
                data_encipherment=False, key_agreement=False, key_cert_sign=False,
                crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.SubjectAlternativeName([
                x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                           critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski),
                           critical=False)
            .sign(ca_key, hashes.SHA256()))

    pem = serialization.Encoding.PEM
    files.ca_file.write_bytes(ca.public_bytes(pem))
    files.cert_file.write_bytes(leaf.public_bytes(pem) + ca.public_bytes(pem))
    files.key_file.write_bytes(key.private_bytes(
        pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))


def _with_openssl(files: CertFiles, days: int) -> None:
    work = files.ca_file.parent
    ca_key, csr, ext = work / "ca.key", work / "server.csr", work / "server.ext"

    def run(*args: str) -> None:
        done = subprocess.run(["openssl", *args], capture_output=True, text=True)
        if done.returncode:
            raise RuntimeError(f"openssl {args[0]} failed: {done.stderr.strip()}")

    ec_key = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    run("req", "-x509", *ec_key, "-keyout", str(ca_key), "-out", str(files.ca_file),
        "-days", str(days), "-subj", f"/CN={CA_NAME}",
        "-addext", "basicConstraints=critical,CA:TRUE,pathlen:0",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        "-addext", "subjectKeyIdentifier=hash")
    run("req", "-new", *ec_key, "-keyout", str(files.key_file), "-out", str(csr),
        "-subj", "/CN=localhost")
    ext.write_text("basicConstraints=critical,CA:FALSE\n"
                   "keyUsage=critical,digitalSignature,keyEncipherment\n"
                   "extendedKeyUsage=serverAuth\n"
                   "subjectAltName=DNS:localhost,IP:127.0.0.1\n"
                   "subjectKeyIdentifier=hash\n"
                   "authorityKeyIdentifier=keyid\n")
    leaf = work / "leaf.pem"
    run("x509", "-req", "-in", str(csr), "-CA", str(files.ca_file), "-CAkey", str(ca_key),
        "-set_serial", str(secrets.randbits(63)), "-days", str(days), "-sha256",
        "-extfile", str(ext), "-out", str(leaf))
    files.cert_file.write_bytes(leaf.read_bytes() + files.ca_file.read_bytes())
    for scratch in (ca_key, csr, ext, leaf):
        scratch.unlink()
