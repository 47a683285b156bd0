#!/usr/bin/env python3
"""Microsoft's own Python SDK (azure-identity, azure-keyvault-keys, -secrets, -certificates)
against the Entra ID and Key Vault stand-in of tests/api/azurekv.rs.

The stand-in and the `azurekv` provider were both written from Microsoft's REST reference,
so a misreading shared by both would pass every Rust test. Here Microsoft's client performs
each operation the provider makes, and a few it does not (upstream reads the certificate
before its secret), against the same stand-in: it must accept every answer, and the
stand-in must accept every request (the Rust test then checks what the stand-in saw).

Usage:
  azure_keyvault_check.py operations    sign in, read the key and its versions, decrypt the
                                        symmetric key our provider wrapped, wrap one for our
                                        provider (printed as `vendor-wrapped <base64>`), read
                                        the certificate and its secret, and the 404s and
                                        Entra's refusal of a wrong secret
  azure_keyvault_check.py refused STATUS  the vault refuses every request with STATUS (401,
                                        403, 429, 500 or 503): the SDK raises its exception
                                        for it, without retrying

Environment: AZURE_TENANT_ID, AZURE_CLIENT_ID, AZURE_CLIENT_SECRET, AZURE_AUTHORITY_HOST
(the sign-in host, read by azure-identity itself), KEY_VAULT_URL, KEY_VAULT_SCOPE,
KEY_NAME, CERTIFICATE_NAME, WRAPPED_KEY and SYMMETRIC_KEY (base64), REQUESTS_CA_BUNDLE (the
stand-in's test CA), STAND_IN_NAMES (its host names, space-separated) and STAND_IN_ADDRESS
(where they are reached). Exits non-zero on the first mismatch.
"""

import base64
import hashlib
import os
import socket
import sys
import time

from azure.core.exceptions import (
    ClientAuthenticationError,
    HttpResponseError,
    ResourceNotFoundError,
)
from azure.identity import ClientSecretCredential
from azure.keyvault.certificates import CertificateClient
from azure.keyvault.keys import KeyClient, KeyType
from azure.keyvault.keys.crypto import CryptographyClient, EncryptionAlgorithm
from azure.keyvault.secrets import SecretClient
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import Encoding, pkcs12


def reach_the_stand_in_by_its_names():
    """The SDK sends a token only over HTTPS to a vault whose host lies under the
    challenge's resource, so the stand-in is reached by the test host names its certificate
    names, on HTTPS's own port as Azure is: the SDK compares the vault's host *and port*
    with the resource's domain, so a vault URL with the stand-in's random port would fail
    that check where Azure never does. No resolver knows these names: here, in this test
    process only, they resolve to the stand-in's address and port."""
    names = set(os.environ["STAND_IN_NAMES"].split())
    stand_in_host, stand_in_port = os.environ["STAND_IN_ADDRESS"].rsplit(":", 1)
    real_getaddrinfo = socket.getaddrinfo

    def getaddrinfo(host, port, *args, **kwargs):
        if host in names:
            return real_getaddrinfo(stand_in_host, int(stand_in_port), *args, **kwargs)
        return real_getaddrinfo(host, port, *args, **kwargs)

    socket.getaddrinfo = getaddrinfo


def check(condition, what):
    if not condition:
        sys.exit(f"MISMATCH: {what}")
    print(f"ok: {what}")


def expect(error_type, call, what):
    """Runs `call`, which must raise `error_type`; returns the exception."""
    try:
        call()
    except error_type as error:
        print(f"ok: {what}: {type(error).__name__}: {str(error).splitlines()[0]}")
        return error
    except Exception as error:  # noqa: BLE001 - any other outcome is the mismatch to report
        sys.exit(f"MISMATCH: {what}: expected {error_type.__name__}, got {type(error).__name__}: {error}")
    sys.exit(f"MISMATCH: {what}: expected {error_type.__name__}, but it succeeded")


def credential(secret=None):
    # Instance discovery asks login.microsoftonline.com whether the sign-in host is an Entra
    # host; the stand-in's is not, and this machine has no internet. MSAL still reads the
    # tenant's OpenID configuration from the stand-in.
    return ClientSecretCredential(
        os.environ["AZURE_TENANT_ID"],
        os.environ["AZURE_CLIENT_ID"],
        secret or os.environ["AZURE_CLIENT_SECRET"],
        disable_instance_discovery=True,
    )


def operations():
    vault_url = os.environ["KEY_VAULT_URL"]
    key_name = os.environ["KEY_NAME"]
    certificate_name = os.environ["CERTIFICATE_NAME"]
    wrapped = base64.b64decode(os.environ["WRAPPED_KEY"])
    symmetric = base64.b64decode(os.environ["SYMMETRIC_KEY"])
    signed_in = credential()

    # Entra ID: the client-credentials grant for the vault's scope.
    token = signed_in.get_token(os.environ["KEY_VAULT_SCOPE"])
    check(token.token and token.expires_on > time.time() + 600, "Entra ID issued a token valid for an hour")

    # GetKey, current and by version, and the version listing (what the provider reads).
    keys = KeyClient(vault_url, signed_in)
    key = keys.get_key(key_name)
    check(key.key_type == KeyType.rsa_hsm, f"GetKey: an RSA-HSM key ({key.key_type})")
    check("decrypt" in key.key_operations, f"GetKey: it may decrypt ({key.key_operations})")
    check(key.properties.enabled and key.properties.version, f"GetKey: enabled version {key.properties.version}")
    public = rsa.RSAPublicNumbers(int.from_bytes(key.key.e, "big"), int.from_bytes(key.key.n, "big"))
    check(public.n.bit_length() == 2048 and public.e == 65537, "GetKey: a 2048-bit modulus and exponent 65537")
    versioned = keys.get_key(key_name, key.properties.version)
    check(versioned.id == key.id and versioned.key.n == key.key.n, "GetKey by version: the same key")
    versions = list(keys.list_properties_of_key_versions(key_name))
    check(
        key.properties.version in [v.version for v in versions] and all(v.created_on for v in versions),
        f"ListKeyVersions: {len(versions)} version(s), the current one among them, each with its creation time",
    )

    # Decrypt with RSA-OAEP in the vault: what our provider wrapped (raw RSA-OAEP SHA-1 under
    # the key's public half) is what Microsoft's client decrypts.
    crypto = CryptographyClient(key, signed_in)
    result = crypto.decrypt(EncryptionAlgorithm.rsa_oaep, wrapped)
    check(result.plaintext == symmetric, "Decrypt RSA-OAEP: our provider's wrapped key opens in the vault")
    check(result.key_id == key.id and result.algorithm == EncryptionAlgorithm.rsa_oaep, "Decrypt: key id and algorithm")
    # And what Microsoft's client wraps (it encrypts locally with the public key, as
    # upstream's .NET client does) opens in the vault, and (the Rust test checks) in ours.
    vendor_wrapped = crypto.encrypt(EncryptionAlgorithm.rsa_oaep, symmetric).ciphertext
    check(crypto.decrypt(EncryptionAlgorithm.rsa_oaep, vendor_wrapped).plaintext == symmetric, "Encrypt RSA-OAEP")
    print("vendor-wrapped", base64.b64encode(vendor_wrapped).decode())

    expect(ResourceNotFoundError, lambda: keys.get_key("no-such-key"), "GetKey of an unknown key")

    # The certificate source: the certificate's secret holds the PFX, without a password.
    secret = SecretClient(vault_url, signed_in).get_secret(certificate_name)
    check(secret.properties.content_type == "application/x-pkcs12", "GetSecret: the PKCS#12 content type")
    check(secret.properties.managed, "GetSecret: the secret is managed by its certificate")
    private_key, leaf, _ = pkcs12.load_key_and_certificates(base64.b64decode(secret.value), None)
    check(isinstance(private_key, rsa.RSAPrivateKey), "GetSecret: a PFX with an RSA private key, no password")
    # Upstream reads the certificate first; it must describe the secret's certificate.
    certificates = CertificateClient(vault_url, signed_in)
    certificate = certificates.get_certificate(certificate_name)
    der = leaf.public_bytes(Encoding.DER)
    check(bytes(certificate.cer) == der, "GetCertificate: `cer` is the PFX's certificate")
    check(certificate.properties.x509_thumbprint == hashlib.sha1(der).digest(), "GetCertificate: its thumbprint")
    check(certificate.secret_id == secret.id, "GetCertificate: `sid` is the secret read")
    check(certificate.key_id == secret.properties.key_id, "GetCertificate: `kid` is the secret's key")
    policy = certificate.policy
    check(
        policy.exportable and policy.key_type == "RSA" and policy.content_type == "application/x-pkcs12",
        "GetCertificate: an exportable RSA key, stored as PKCS#12",
    )
    expect(ResourceNotFoundError, lambda: SecretClient(vault_url, signed_in).get_secret("other-cert"), "GetSecret 404")
    expect(ResourceNotFoundError, lambda: certificates.get_certificate("other-cert"), "GetCertificate 404")

    # Entra ID's refusal of a wrong secret, as MSAL reads it.
    refused = expect(
        ClientAuthenticationError,
        lambda: credential("Wr0ng~Secret-Value").get_token(os.environ["KEY_VAULT_SCOPE"]),
        "a wrong client secret",
    )
    check("AADSTS7000215" in str(refused), "Entra's reason is in the message")


def refused(status):
    """Every vault request answers `status`: the SDK's exception for it, at once."""
    keys = KeyClient(os.environ["KEY_VAULT_URL"], credential(), retry_total=0)
    expected = {401: ClientAuthenticationError}.get(status, HttpResponseError)
    error = expect(expected, lambda: keys.get_key(os.environ["KEY_NAME"]), f"GetKey answered {status}")
    check(error.status_code == status, f"the exception's status is {status}")
    codes = {401: "Unauthorized", 403: "Forbidden", 429: "Throttled", 500: "InternalServerError", 503: "ServiceUnavailable"}
    check(error.error is not None and error.error.code == codes[status], f"Key Vault's error code {codes[status]}")
    check(error.error.message and error.error.message in str(error), "Key Vault's message is in the exception")


def main():
    reach_the_stand_in_by_its_names()
    mode = sys.argv[1:2]
    if mode == ["operations"]:
        operations()
    elif mode == ["refused"] and len(sys.argv) == 3:
        refused(int(sys.argv[2]))
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
