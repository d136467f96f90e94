"""A throw-away certificate authority for TLS tests on 127.0.0.1.

Part of the test toolkit (:mod:`txexchange.testing`), beside the fake
servers: it makes the server certificates the fakes present and the trust
roots the client under test is given, so TLS is exercised with full
verification (chain and host name) instead of being switched off.

Keys are EC P-256, generated with :mod:`cryptography` when the CA or a server
certificate is made; that takes milliseconds, so a fresh CA per test is fine.
"""

from __future__ import annotations

import datetime
import ipaddress
from collections.abc import Iterable

import attrs
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from twisted.internet.interfaces import IOpenSSLClientConnectionCreator
from twisted.internet.ssl import (
    Certificate,
    CertificateOptions,
    optionsForClientTLS,
)

__all__ = ["ServerCertificate", "TestCA"]

_CLOCK_SKEW = datetime.timedelta(hours=1)


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _general_name(name: str) -> x509.GeneralName:
    """An IP address SAN for IP literals, a DNS name SAN for everything else."""
    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        return x509.DNSName(name)


@attrs.frozen
class ServerCertificate:
    """A server certificate and its private key, issued by a :class:`TestCA`.

    Pass it as ``tls=`` to :class:`~txexchange.testing.FakeExchangeServer`, or
    use :meth:`server_options` with any Twisted TLS server.
    """

    #: the certificate, PEM
    cert_pem: bytes
    #: its private key, PEM (PKCS#8, unencrypted)
    key_pem: bytes
    #: the names (SANs) the certificate was issued for
    names: tuple[str, ...] = ()

    def server_options(self) -> CertificateOptions:
        """TLS options for a server presenting this certificate."""
        return CertificateOptions(
            privateKey=serialization.load_pem_private_key(self.key_pem, password=None),
            certificate=x509.load_pem_x509_certificate(self.cert_pem),
        )


class TestCA:
    """A certificate authority generated on the spot for one test (or session).

    >>> ca = TestCA.generate()
    >>> server_cert = ca.issue()                  # for 127.0.0.1 and localhost
    >>> options = optionsForClientTLS("127.0.0.1", trustRoot=ca.trust_root())
    """

    __test__ = False  # not a pytest test class, whatever its name says

    def __init__(self, common_name: str = "txexchange test CA") -> None:
        self.common_name = common_name
        self._key = _new_key()
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
        public = self._key.public_key()
        now = _now()
        self._cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(public)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - _CLOCK_SKEW)
            .not_valid_after(now + datetime.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
            .sign(self._key, hashes.SHA256())
        )
        #: the CA certificate, PEM
        self.ca_pem: bytes = self._cert.public_bytes(serialization.Encoding.PEM)

    @classmethod
    def generate(cls, common_name: str = "txexchange test CA") -> TestCA:
        """Generate a new CA (key and self-signed certificate)."""
        return cls(common_name)

    def trust_root(self) -> Certificate:
        """The CA certificate as a trust root for ``optionsForClientTLS(trustRoot=...)``."""
        return Certificate.loadPEM(self.ca_pem)

    def client_options(self, hostname: str = "127.0.0.1") -> IOpenSSLClientConnectionCreator:
        """Client TLS options that trust this CA (and only it) and verify ``hostname``."""
        return optionsForClientTLS(hostname, trustRoot=self.trust_root())

    def issue(
        self,
        names: Iterable[str] = ("127.0.0.1", "localhost"),
        *,
        expired: bool = False,
    ) -> ServerCertificate:
        """Issue a server certificate for ``names``.

        IP literals become IP address SANs, anything else a DNS name SAN; the
        first name is also the subject's common name.  ``expired=True`` issues
        a certificate whose validity ended yesterday, for testing that the
        client refuses it.
        """
        names = tuple(names)
        if not names:
            raise ValueError("a server certificate needs at least one name")
        key = _new_key()
        now = _now()
        if expired:
            not_before = now - datetime.timedelta(days=30)
            not_after = now - datetime.timedelta(days=1)
        else:
            not_before, not_after = now - _CLOCK_SKEW, now + datetime.timedelta(days=30)
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
            .issuer_name(self._cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_before)
            .not_valid_after(not_after)
            .add_extension(
                x509.SubjectAlternativeName([_general_name(n) for n in names]), critical=False
            )
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False
            )
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self._key.public_key()),
                critical=False,
            )
            .sign(self._key, hashes.SHA256())
        )
        return ServerCertificate(
            cert_pem=cert.public_bytes(serialization.Encoding.PEM),
            key_pem=_key_pem(key),
            names=names,
        )

    def __repr__(self) -> str:
        return f"<TestCA {self.common_name!r}>"
