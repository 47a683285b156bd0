#!/usr/bin/env python3
"""Writes a PKCS#12 file protected by the *absent* password, the way .NET writes each
certificate of its ``X509Store`` on Linux (``X509Certificate2.Export(Pkcs12)`` with a null
password): key and certificate bags encrypted with pbeWithSHAAnd3-KeyTripleDES-CBC, 2000
iterations, an HMAC over the contents, every key derived from a zero-length password (not
the two zero bytes of an empty BMPString).

OpenSSL's ``PKCS12_create`` and ``PKCS12_set_mac`` derive keys that way when given a NULL
password, so this calls libcrypto directly (the OpenSSL command line always passes a
string). Usage: absent_password_pfx.py KEY.pem CERT.pem OUT.pfx [sha1|sha256]
"""

import ctypes
import ctypes.util
import sys

NID_PBE_SHA1_3DES = 146  # pbeWithSHAAnd3-KeyTripleDES-CBC


def main():
    key_path, cert_path, out_path = sys.argv[1:4]
    mac_name = sys.argv[4] if len(sys.argv) > 4 else "sha1"
    name = ctypes.util.find_library("crypto")
    if name is None:
        sys.exit("libcrypto not found")
    lib = ctypes.CDLL(name)
    ptr = ctypes.c_void_p
    lib.BIO_new_mem_buf.restype = ptr
    lib.BIO_new_mem_buf.argtypes = [ctypes.c_char_p, ctypes.c_int]
    lib.PEM_read_bio_PrivateKey.restype = ptr
    lib.PEM_read_bio_PrivateKey.argtypes = [ptr, ptr, ptr, ptr]
    lib.PEM_read_bio_X509.restype = ptr
    lib.PEM_read_bio_X509.argtypes = [ptr, ptr, ptr, ptr]
    lib.PKCS12_create.restype = ptr
    lib.PKCS12_create.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ptr, ptr, ptr] + [ctypes.c_int] * 5
    lib.PKCS12_set_mac.restype = ctypes.c_int
    lib.PKCS12_set_mac.argtypes = [ptr, ctypes.c_char_p, ctypes.c_int, ptr, ctypes.c_int, ctypes.c_int, ptr]
    lib.EVP_sha1.restype = ptr
    lib.EVP_sha256.restype = ptr
    lib.i2d_PKCS12.restype = ctypes.c_int
    lib.i2d_PKCS12.argtypes = [ptr, ctypes.POINTER(ptr)]

    key_pem = open(key_path, "rb").read()
    cert_pem = open(cert_path, "rb").read()
    key = lib.PEM_read_bio_PrivateKey(lib.BIO_new_mem_buf(key_pem, len(key_pem)), None, None, None)
    cert = lib.PEM_read_bio_X509(lib.BIO_new_mem_buf(cert_pem, len(cert_pem)), None, None, None)
    if not key or not cert:
        sys.exit("cannot read the key or certificate")
    # mac_iter -1: no MAC yet; it is added below with the digest .NET or OpenSSL would use.
    p12 = lib.PKCS12_create(None, None, key, cert, None, NID_PBE_SHA1_3DES, NID_PBE_SHA1_3DES, 2000, -1, 0)
    if not p12:
        sys.exit("PKCS12_create failed")
    digest = lib.EVP_sha1() if mac_name == "sha1" else lib.EVP_sha256()
    if lib.PKCS12_set_mac(p12, None, -1, None, 0, 2000, digest) != 1:
        sys.exit("PKCS12_set_mac failed")
    out = ptr()
    length = lib.i2d_PKCS12(p12, ctypes.byref(out))
    if length <= 0:
        sys.exit("i2d_PKCS12 failed")
    with open(out_path, "wb") as f:
        f.write(ctypes.string_at(out, length))


if __name__ == "__main__":
    main()
