"""TLS to Redis as docs/DEPLOYMENT.md says to set it up: one rediss:// URL with
ssl_cert_reqs=required and ssl_ca_certs serves the Celery broker (kombu) and the
Channels layer and cache (redis-py), verifies the server's certificate, and refuses a
server its CA did not sign. Against a real redis-server with TLS on loopback."""

from __future__ import annotations

import datetime
import ipaddress
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from kombu import Connection

pytestmark = pytest.mark.skipif(shutil.which("redis-server") is None, reason="redis-server is not installed")


def certificate(
    subject: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: x509.Name | None,
    signer: ec.EllipticCurvePrivateKey,
) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer or name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
    )
    if issuer is None:
        builder = builder.add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
    else:
        names = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    return builder.sign(signer, hashes.SHA256())


def write_pem(path: Path, item: x509.Certificate | ec.EllipticCurvePrivateKey) -> Path:
    if isinstance(item, x509.Certificate):
        path.write_bytes(item.public_bytes(serialization.Encoding.PEM))
    else:
        path.write_bytes(
            item.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
    return path


def a_ca(folder: Path, name: str) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    ca = certificate(name, key, None, key)
    return ca, key, write_pem(folder / f"{name}.pem", ca)


@pytest.fixture(scope="module")
def tls_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, Path, Path]]:
    """A redis-server that speaks only TLS on a free loopback port; yields the port,
    the CA that signed its certificate, and a CA that did not."""
    folder = tmp_path_factory.mktemp("tls")
    ca, ca_key, ca_path = a_ca(folder, "flowkit-ca")
    _, _, other_ca_path = a_ca(folder, "other-ca")
    server_key = ec.generate_private_key(ec.SECP256R1())
    server = certificate("localhost", server_key, ca.subject, ca_key)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    process = subprocess.Popen(
        ["redis-server", "--port", "0", "--tls-port", str(port), "--bind", "127.0.0.1",
         "--tls-cert-file", str(write_pem(folder / "server.pem", server)),
         "--tls-key-file", str(write_pem(folder / "server.key", server_key)),
         "--tls-ca-cert-file", str(ca_path), "--tls-auth-clients", "no",
         "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.monotonic() + 10
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                break
        except OSError:
            assert process.poll() is None, "redis-server with TLS did not start (built without TLS?)"
            assert time.monotonic() < deadline, "redis-server with TLS did not listen"
            time.sleep(0.05)
    yield port, ca_path, other_ca_path
    process.terminate()
    process.wait(timeout=10)


def url(port: int, ca: Path) -> str:
    return f"rediss://localhost:{port}/0?ssl_cert_reqs=required&ssl_ca_certs={ca}"


def test_the_documented_url_carries_broker_messages_over_verified_tls(tls_redis):
    port, ca, _ = tls_redis
    with Connection(url(port, ca)) as connection:
        queue = connection.SimpleQueue(f"tls-probe-{port}")
        queue.put({"node": "n"})
        message = queue.get(timeout=5)
        message.ack()
        queue.close()
        assert message.payload == {"node": "n"}
        assert connection.ssl["ssl_ca_certs"] == str(ca)


def test_the_same_url_serves_the_channel_layer_and_cache_client(tls_redis):
    port, ca, _ = tls_redis
    assert redis.Redis.from_url(url(port, ca)).ping()


def test_a_server_not_signed_by_the_configured_ca_is_refused(tls_redis):
    port, _, other_ca = tls_redis
    with pytest.raises(redis.ConnectionError):
        redis.Redis.from_url(url(port, other_ca)).ping()
    with (
        pytest.raises(Exception, match="certificate verify failed"),
        Connection(url(port, other_ca)) as connection,
    ):
        connection.ensure_connection(max_retries=1)
