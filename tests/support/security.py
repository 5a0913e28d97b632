"""A private, secured Kafka broker for the security tests: TLS, SASL/SCRAM users and ACLs, all real.

What it builds, and why each piece is the production one rather than a stand-in:

* a throw-away certificate authority and a broker certificate for ``127.0.0.1`` (Python's
  ``cryptography``), handed to Kafka as a PEM keystore (``ssl.keystore.type=PEM``), plus a second,
  unrelated CA that clients can be pointed at to prove an untrusted broker is refused;
* SCRAM users created by Kafka's own ``StorageTool format --add-scram``, stored in the cluster metadata
  exactly as ``kafka-configs --alter --add-config SCRAM-SHA-512=…`` would;
* the KRaft ``StandardAuthorizer`` with ACLs granted by Kafka's own ``AclCommand``.

Listeners: ``SECURE`` (SASL_SSL) is what clients under test use. ``PLAINTEXT`` stays on loopback for the
harness (readiness probe, topic creation, reading outputs) and as the inter-broker listener; its
principal ``User:ANONYMOUS`` is a super user, as is the controller's, because KRaft's broker-to-controller
requests need ``CLUSTER_ACTION``. A production cluster would put those on SASL/mTLS instead; nothing the
tests assert about the ``SECURE`` listener depends on it.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from devstack.broker import KafkaBroker, free_port

__all__ = ["AUTHORIZER", "Pki", "SecureKafka", "make_pki"]

AUTHORIZER = "org.apache.kafka.metadata.authorizer.StandardAuthorizer"
ACL_COMMAND = "org.apache.kafka.tools.AclCommand"


@dataclass(frozen=True)
class Pki:
    ca_file: Path  # the CA clients must trust
    keystore_file: Path  # broker: private key (PKCS#8) followed by its certificate chain
    rogue_ca_file: Path  # a CA that did not sign the broker: trusting only it must fail


def _key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _ca(cn: str) -> tuple[rsa.RSAPrivateKey, x509.Certificate]:
    key = _key()
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(cn))
        .issuer_name(_name(cn))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=2))
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
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return key, cert


def make_pki(directory: Path) -> Pki:
    """Generate the CA, the broker's key and certificate (SAN ``127.0.0.1`` and ``localhost``) and a rogue CA."""
    directory.mkdir(parents=True, exist_ok=True)
    ca_key, ca_cert = _ca("bcw test CA")
    _, rogue_cert = _ca("bcw rogue CA")
    key = _key()
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name("kafka.test"))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=2))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]),
            critical=False,
        )
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    key_pem = key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    pki = Pki(directory / "ca.pem", directory / "broker-keystore.pem", directory / "rogue-ca.pem")
    pki.ca_file.write_bytes(ca_cert.public_bytes(pem))
    pki.rogue_ca_file.write_bytes(rogue_cert.public_bytes(pem))
    pki.keystore_file.write_bytes(key_pem + cert.public_bytes(pem) + ca_cert.public_bytes(pem))
    pki.keystore_file.chmod(0o600)
    return pki


@dataclass
class SecureKafka:
    """A private broker with a SASL_SSL listener, SCRAM users and the StandardAuthorizer."""

    workdir: Path
    #: name -> (mechanism, password)
    users: dict[str, tuple[str, str]]
    broker: KafkaBroker = field(init=False)
    pki: Pki = field(init=False)
    secure_port: int = field(default_factory=free_port)

    def __post_init__(self) -> None:
        self.pki = make_pki(self.workdir / "pki")
        self.broker = KafkaBroker()
        b, c, s = self.broker.port, self.broker.controller_port, self.secure_port
        jaas = "org.apache.kafka.common.security.scram.ScramLoginModule required;"
        self.broker.extra_config = {
            "listeners": f"PLAINTEXT://127.0.0.1:{b},CONTROLLER://127.0.0.1:{c},SECURE://127.0.0.1:{s}",
            "advertised.listeners": f"PLAINTEXT://127.0.0.1:{b},CONTROLLER://127.0.0.1:{c},SECURE://127.0.0.1:{s}",
            "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT,SECURE:SASL_SSL",
            "sasl.enabled.mechanisms": "SCRAM-SHA-512,SCRAM-SHA-256",
            "listener.name.secure.sasl.enabled.mechanisms": "SCRAM-SHA-512,SCRAM-SHA-256",
            "listener.name.secure.scram-sha-512.sasl.jaas.config": jaas,
            "listener.name.secure.scram-sha-256.sasl.jaas.config": jaas,
            "listener.name.secure.ssl.keystore.type": "PEM",
            "listener.name.secure.ssl.keystore.location": str(self.pki.keystore_file),
            "listener.name.secure.ssl.client.auth": "none",
            "authorizer.class.name": AUTHORIZER,
            "super.users": "User:admin;User:ANONYMOUS",
            "allow.everyone.if.no.acl.found": "false",
        }

    @property
    def secure_bootstrap(self) -> str:
        return f"127.0.0.1:{self.secure_port}"

    def start(self) -> SecureKafka:
        scram = [
            a for name, (mech, pw) in self.users.items() for a in ("--add-scram", f"{mech}=[name={name},password={pw}]")
        ]
        self.broker.format(scram)
        self.broker.start(timeout=180)
        return self

    def close(self) -> None:
        self.broker.close()

    def acl(self, *args: str) -> str:
        """``kafka-acls.sh --add …`` through the super-user listener, e.g. ``acl("--allow-principal", …)``."""
        return self.broker.run_tool(ACL_COMMAND, "--bootstrap-server", self.broker.bootstrap_servers, "--add", *args)

    def client_env(self, user: str, password: str | None = None, *, ca_file: Path | None = None) -> dict[str, str]:
        """``BCW_KAFKA_*`` variables for connecting as ``user`` over the SASL_SSL listener."""
        mechanism, real_password = self.users[user]
        return {
            "BCW_KAFKA_BOOTSTRAP_SERVERS": self.secure_bootstrap,
            "BCW_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
            "BCW_KAFKA_SASL_MECHANISM": mechanism,
            "BCW_KAFKA_SASL_USERNAME": user,
            "BCW_KAFKA_SASL_PASSWORD": password if password is not None else real_password,
            "BCW_KAFKA_SSL_CAFILE": str(ca_file or self.pki.ca_file),
        }
