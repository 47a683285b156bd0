#!/usr/bin/env python3
"""Google's own Python SDK (google-auth, google-cloud-kms over REST, google-crc32c) against
the Cloud KMS stand-in of tests/api/gcpkms.rs.

The stand-in and the `gcpkms` provider were both written from Google's REST reference, so a
misreading shared by both would pass every Rust test. Here Google's client performs each
operation the provider makes, and GetCryptoKeyVersion, against the same stand-in: it must
accept every answer (enums, int64 CRC32C values, bytes), and the stand-in must accept every
request (the Rust test then checks what the stand-in saw).

Usage:
  google_kms_check.py operations      sign in as the service account both ways (a self-signed
                                      JWT, as Google's clients do for Cloud APIs, and the
                                      JWT-bearer grant at the token endpoint), read the key
                                      version and its public key, decrypt the symmetric key
                                      our provider wrapped, wrap one for our provider (printed
                                      as `vendor-wrapped <base64>`), the CRC32C checks, 404
  google_kms_check.py refused STATUS  KMS refuses every request with STATUS (401, 403, 429,
                                      500 or 503): the SDK raises its exception for it

Environment: GOOGLE_APPLICATION_CREDENTIALS (the service-account key file, whose token_uri
is the stand-in's), KMS_ENDPOINT, KEY_VERSION (the full resource name), WRAPPED_KEY and
SYMMETRIC_KEY (base64). Exits non-zero on the first mismatch.
"""

import base64
import datetime
import os
import sys

import google.auth
import google.auth.transport.requests
import google_crc32c
import grpc  # a dependency of google-cloud-kms; its status codes are the canonical codes
from google.api_core import exceptions
from google.cloud import kms
from google.oauth2 import credentials as oauth2_credentials
from google.oauth2 import service_account
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding

CLOUD_PLATFORM = "https://www.googleapis.com/auth/cloud-platform"
OAEP_SHA256 = padding.OAEP(mgf=padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(), label=None)


def check(condition, what):
    if not condition:
        sys.exit(f"MISMATCH: {what}")
    print(f"ok: {what}")


def expect(error_type, call, what):
    """Runs `call`, which must raise exactly `error_type`; returns the exception."""
    try:
        call()
    except exceptions.GoogleAPICallError as error:
        if type(error) is not error_type:
            sys.exit(f"MISMATCH: {what}: expected {error_type.__name__}, got {type(error).__name__}: {error}")
        print(f"ok: {what}: {type(error).__name__}: {error}")
        return error
    sys.exit(f"MISMATCH: {what}: expected {error_type.__name__}, but it succeeded")


def client(credentials=None):
    # Credentials the Google way (Application Default Credentials: the key file named by
    # GOOGLE_APPLICATION_CREDENTIALS) unless given; the REST transport, at the stand-in.
    return kms.KeyManagementServiceClient(
        credentials=credentials,
        transport="rest",
        client_options={"api_endpoint": os.environ["KMS_ENDPOINT"]},
    )


def crc32c(data):
    return google_crc32c.value(data)


def operations():
    name = os.environ["KEY_VERSION"]
    wrapped = base64.b64decode(os.environ["WRAPPED_KEY"])
    symmetric = base64.b64decode(os.environ["SYMMETRIC_KEY"])

    # The JWT-bearer grant (RFC 7523) at the key file's token_uri, as google-auth refreshes a
    # service account's access token.
    granted = service_account.Credentials.from_service_account_file(
        os.environ["GOOGLE_APPLICATION_CREDENTIALS"], scopes=[CLOUD_PLATFORM]
    )
    granted.refresh(google.auth.transport.requests.Request())
    now = datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None)
    check(
        granted.token and granted.expiry > now + datetime.timedelta(minutes=50),
        "the token endpoint granted an access token for an hour",
    )
    by_grant = client(oauth2_credentials.Credentials(granted.token))
    # Application Default Credentials: the client signs its own JWT, as our provider's does.
    by_adc = client()

    for kms_client, how in [(by_adc, "self-signed JWT"), (by_grant, "granted token")]:
        version = kms_client.get_crypto_key_version(name=name)
        check(version.name == name, f"GetCryptoKeyVersion ({how}): the name")
        check(version.state == kms.CryptoKeyVersion.CryptoKeyVersionState.ENABLED, "GetCryptoKeyVersion: ENABLED")
        check(
            version.algorithm == kms.CryptoKeyVersion.CryptoKeyVersionAlgorithm.RSA_DECRYPT_OAEP_2048_SHA256,
            f"GetCryptoKeyVersion: {version.algorithm.name}",
        )
        check(version.protection_level == kms.ProtectionLevel.HSM, "GetCryptoKeyVersion: HSM")
        check(version.create_time.year == 2026, "GetCryptoKeyVersion: its creation time")

    public_key = by_adc.get_public_key(name=name)
    check(public_key.name == name, "GetPublicKey: the key version's name")
    check(public_key.pem_crc32c == crc32c(public_key.pem.encode()), "GetPublicKey: pem_crc32c is the PEM's CRC32C")
    check(
        public_key.algorithm == kms.CryptoKeyVersion.CryptoKeyVersionAlgorithm.RSA_DECRYPT_OAEP_2048_SHA256,
        "GetPublicKey: RSA_DECRYPT_OAEP_2048_SHA256",
    )
    check(public_key.protection_level == kms.ProtectionLevel.HSM, "GetPublicKey: HSM")
    rsa_public = serialization.load_pem_public_key(public_key.pem.encode())
    check(rsa_public.key_size == 2048, "GetPublicKey: a 2048-bit RSA SubjectPublicKeyInfo")

    # The SDK's wrapping (local RSA-OAEP SHA-256, as upstream's .NET client), which the Rust
    # test unwraps with our provider.
    vendor_wrapped = rsa_public.encrypt(symmetric, OAEP_SHA256)
    print("vendor-wrapped", base64.b64encode(vendor_wrapped).decode())

    # AsymmetricDecrypt with the integrity fields, as Google's KMS documentation does it.
    for ciphertext, whose in [(wrapped, "our provider's"), (vendor_wrapped, "the SDK's")]:
        response = by_adc.asymmetric_decrypt(
            request={"name": name, "ciphertext": ciphertext, "ciphertext_crc32c": crc32c(ciphertext)}
        )
        check(response.verified_ciphertext_crc32c, f"AsymmetricDecrypt of {whose} wrapping: ciphertext CRC32C verified")
        check(response.plaintext == symmetric, f"AsymmetricDecrypt of {whose} wrapping: the symmetric key")
        check(response.plaintext_crc32c == crc32c(response.plaintext), "AsymmetricDecrypt: plaintext_crc32c")
        check(response.protection_level == kms.ProtectionLevel.HSM, "AsymmetricDecrypt: HSM")

    response = by_grant.asymmetric_decrypt(request={"name": name, "ciphertext": wrapped})
    check(
        response.plaintext == symmetric and not response.verified_ciphertext_crc32c,
        "AsymmetricDecrypt without a checksum: decrypted, nothing verified",
    )
    damaged = expect(
        exceptions.BadRequest,
        lambda: by_adc.asymmetric_decrypt(
            request={"name": name, "ciphertext": wrapped, "ciphertext_crc32c": crc32c(wrapped) ^ 1}
        ),
        "AsymmetricDecrypt with a wrong ciphertext_crc32c",
    )
    check("ciphertext_crc32c" in damaged.message, "the refusal names the checksum field")
    unknown = name.rsplit("/", 1)[0] + "/7"
    missing = expect(exceptions.NotFound, lambda: by_adc.get_public_key(name=unknown), "GetPublicKey of version 7")
    check(unknown in missing.message, "the refusal names the key version")


def refused(status):
    """Every KMS request answers `status`: the SDK's exception for that HTTP status, its
    message from the body, and a canonical code in the body that Google's mapping puts under
    the same exception (PERMISSION_DENIED under 403 Forbidden, ...)."""
    by_http_status = {
        401: exceptions.Unauthorized,
        403: exceptions.Forbidden,
        429: exceptions.TooManyRequests,
        500: exceptions.InternalServerError,
        503: exceptions.ServiceUnavailable,
    }[status]
    error = expect(
        by_http_status,
        lambda: client().get_public_key(name=os.environ["KEY_VERSION"], retry=None),
        f"GetPublicKey answered {status}",
    )
    body = error.response.json()["error"]
    check(body["code"] == status and body["message"] in error.message, "the error's code and message")
    by_code = exceptions.exception_class_for_grpc_status(grpc.StatusCode[body["status"]])
    check(issubclass(by_code, by_http_status), f"{body['status']} ({by_code.__name__}) agrees with HTTP {status}")


def main():
    mode = sys.argv[1:2]
    if mode == ["operations"]:
        operations()
    elif mode == ["refused"] and len(sys.argv) == 3:
        refused(int(sys.argv[2]))
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
