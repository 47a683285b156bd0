#!/usr/bin/env python3
"""An independent implementation of the official Key Connector's storage format.

Written from the format's description (not from this project's Rust code) so that the
integration tests can prove compatibility in both directions:

* ``make-sqlite`` / ``make-json`` write a store exactly as the official service would:
  a random 256-bit symmetric key wrapped with RSA-OAEP (SHA-1, MGF1-SHA-1) by the
  certificate's public key, and user keys sealed with AES-256-GCM (12-byte random nonce,
  no associated data) stored as base64(ciphertext || tag || nonce).
  SQLite: EF Core's ``InitialCreate`` schema, GUIDs as upper-case TEXT, dates as
  ``yyyy-MM-dd HH:mm:ss.FFFFFFF``. JSON: JsonFlatFileDataStore's document (Newtonsoft,
  lower camel case, two-space indentation), GUIDs lower case, ISO dates ending in ``Z``.
* ``read-sqlite`` / ``read-json`` unwrap and decrypt a store written by anyone, checking the
  format strictly on the way, and exit non-zero on any deviation.

Every command prints a manifest ``{"users": {"<lower-case guid>": "<base64 clear key>"}}``.
Only the ``cryptography`` package is needed beyond the standard library.
"""

import argparse
import base64
import datetime
import json
import os
import random
import re
import sqlite3
import sys
import uuid

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.serialization import pkcs12

MIGRATION_ID = "20210820155938_InitialCreate"
PRODUCT_VERSION = "5.0.9"

SQLITE_DDL = [
    'CREATE TABLE "__EFMigrationsHistory" ("MigrationId" TEXT NOT NULL CONSTRAINT "PK___EFMigrationsHistory" PRIMARY KEY, "ProductVersion" TEXT NOT NULL)',
    'CREATE TABLE "ApplicationDatas" ("Id" INTEGER NOT NULL CONSTRAINT "PK_ApplicationDatas" PRIMARY KEY AUTOINCREMENT, "SymmetricKey" TEXT NULL)',
    'CREATE TABLE "UserKeys" ("Id" TEXT NOT NULL CONSTRAINT "PK_UserKeys" PRIMARY KEY, "Key" TEXT NULL, "CreationDate" TEXT NOT NULL, "RevisionDate" TEXT NULL, "LastAccessDate" TEXT NULL)',
]

OAEP_SHA1 = padding.OAEP(mgf=padding.MGF1(algorithm=hashes.SHA1()), algorithm=hashes.SHA1(), label=None)

SQLITE_DATE = re.compile(r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}(\.\d{1,7})?$")
ISO_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,7})?Z$")
UPPER_GUID = re.compile(r"^[0-9A-F]{8}-[0-9A-F]{4}-[0-9A-F]{4}-[0-9A-F]{4}-[0-9A-F]{12}$")
LOWER_GUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


class FormatError(Exception):
    pass


def load_private_key(path, password):
    with open(path, "rb") as f:
        data = f.read()
    key, _cert, _extra = pkcs12.load_key_and_certificates(data, password.encode() if password else None)
    if key is None:
        raise FormatError(f"{path} holds no private key")
    return key


def wrap_symmetric_key(private_key, key):
    return base64.b64encode(private_key.public_key().encrypt(key, OAEP_SHA1)).decode()


def unwrap_symmetric_key(private_key, wrapped):
    key = private_key.decrypt(base64.b64decode(wrapped, validate=True), OAEP_SHA1)
    if len(key) != 32:
        raise FormatError(f"the symmetric key is {len(key)} bytes, not 32")
    return key


def seal(symmetric_key, clear, rng):
    nonce = rng.randbytes(12)
    sealed = AESGCM(symmetric_key).encrypt(nonce, clear, None)  # ciphertext || tag
    return base64.b64encode(sealed + nonce).decode()


def open_sealed(symmetric_key, stored):
    raw = base64.b64decode(stored, validate=True)
    if len(raw) < 28:
        raise FormatError("a sealed key is shorter than tag + nonce")
    return AESGCM(symmetric_key).decrypt(raw[-12:], raw[:-12], None)


def dotnet_fraction(dt):
    ticks = dt.microsecond * 10
    return f".{ticks:07d}".rstrip("0") if ticks else ""


def sqlite_date(dt):
    return dt.strftime("%Y-%m-%d %H:%M:%S") + dotnet_fraction(dt)


def iso_date(dt):
    return dt.strftime("%Y-%m-%dT%H:%M:%S") + dotnet_fraction(dt) + "Z"


def make_users(count, rng):
    base = datetime.datetime(2021, 8, 20, 15, 59, 54, 123456)
    users = []
    for i in range(count):
        user_id = uuid.UUID(int=rng.getrandbits(128), version=4)
        created = base + datetime.timedelta(days=i, microseconds=rng.randrange(1_000_000))
        if i % 5 == 0:
            created = created.replace(microsecond=0)  # no fraction at all
        revised = created + datetime.timedelta(hours=1) if i % 3 == 0 else None
        accessed = created + datetime.timedelta(days=2, microseconds=500) if i % 2 == 0 else None
        users.append((user_id, rng.randbytes(64), created, revised, accessed))
    return users


def manifest(users):
    return {"users": {str(u): base64.b64encode(k).decode() for u, k in users}}


def make_sqlite(args, private_key, rng):
    if os.path.exists(args.db):
        raise FormatError(f"{args.db} exists; refusing to overwrite it")
    symmetric_key = rng.randbytes(32)
    users = make_users(args.users, rng)
    db = sqlite3.connect(args.db)
    with db:
        for statement in SQLITE_DDL:
            db.execute(statement)
        db.execute('INSERT INTO "__EFMigrationsHistory" VALUES (?, ?)', (MIGRATION_ID, PRODUCT_VERSION))
        db.execute('INSERT INTO "ApplicationDatas" ("SymmetricKey") VALUES (?)', (wrap_symmetric_key(private_key, symmetric_key),))
        for user_id, clear, created, revised, accessed in users:
            db.execute(
                'INSERT INTO "UserKeys" ("Id", "Key", "CreationDate", "RevisionDate", "LastAccessDate") VALUES (?, ?, ?, ?, ?)',
                (
                    str(user_id).upper(),
                    seal(symmetric_key, clear, rng),
                    sqlite_date(created),
                    sqlite_date(revised) if revised else None,
                    sqlite_date(accessed) if accessed else None,
                ),
            )
    db.close()
    return manifest((u, k) for u, k, *_ in users)


def make_json(args, private_key, rng):
    if os.path.exists(args.file):
        raise FormatError(f"{args.file} exists; refusing to overwrite it")
    symmetric_key = rng.randbytes(32)
    users = make_users(args.users, rng)
    document = {
        "symmetricKey": wrap_symmetric_key(private_key, symmetric_key),
        "userKey": [
            {
                "id": str(user_id),
                "key": seal(symmetric_key, clear, rng),
                "creationDate": iso_date(created),
                "revisionDate": iso_date(revised) if revised else None,
                "lastAccessDate": iso_date(accessed) if accessed else None,
            }
            for user_id, clear, created, revised, accessed in users
        ],
    }
    with open(args.file, "w", encoding="utf-8") as f:
        json.dump(document, f, indent=2)
    return manifest((u, k) for u, k, *_ in users)


def check_columns(db, table, expected):
    columns = [(row[1], row[2].upper(), bool(row[3]), row[5]) for row in db.execute(f'PRAGMA table_info("{table}")')]
    if columns != expected:
        raise FormatError(f"table {table} has columns {columns}, expected {expected}")


def read_sqlite(args, private_key, _rng):
    db = sqlite3.connect(f"file:{args.db}?mode=ro", uri=True)
    tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    for table in ("ApplicationDatas", "UserKeys", "__EFMigrationsHistory"):
        if table not in tables:
            raise FormatError(f"table {table} is missing")
    check_columns(db, "ApplicationDatas", [("Id", "INTEGER", True, 1), ("SymmetricKey", "TEXT", False, 0)])
    check_columns(
        db,
        "UserKeys",
        [
            ("Id", "TEXT", True, 1),
            ("Key", "TEXT", False, 0),
            ("CreationDate", "TEXT", True, 0),
            ("RevisionDate", "TEXT", False, 0),
            ("LastAccessDate", "TEXT", False, 0),
        ],
    )
    history = list(db.execute('SELECT "MigrationId" FROM "__EFMigrationsHistory"'))
    if (MIGRATION_ID,) not in history:
        raise FormatError(f"__EFMigrationsHistory lacks {MIGRATION_ID}: {history}")
    rows = list(db.execute('SELECT "SymmetricKey" FROM "ApplicationDatas" ORDER BY "Id"'))
    if len(rows) != 1 or rows[0][0] is None:
        raise FormatError(f"expected exactly one symmetric key row, found {len(rows)}")
    symmetric_key = unwrap_symmetric_key(private_key, rows[0][0])
    users = {}
    for user_id, key, created, revised, accessed in db.execute(
        'SELECT "Id", "Key", "CreationDate", "RevisionDate", "LastAccessDate" FROM "UserKeys"'
    ):
        if not UPPER_GUID.match(user_id):
            raise FormatError(f"GUID {user_id!r} is not upper case")
        for name, value in (("CreationDate", created), ("RevisionDate", revised), ("LastAccessDate", accessed)):
            if value is not None and not SQLITE_DATE.match(value):
                raise FormatError(f"{user_id} {name} {value!r} is not EF Core's date text")
        if created is None:
            raise FormatError(f"{user_id} has no CreationDate")
        users[user_id.lower()] = base64.b64encode(open_sealed(symmetric_key, key)).decode()
    db.close()
    return {"users": users}


def read_json(args, private_key, _rng):
    with open(args.file, encoding="utf-8") as f:
        document = json.load(f)
    if set(document) - {"symmetricKey", "userKey"}:
        raise FormatError(f"unexpected top-level properties {sorted(set(document))}")
    symmetric_key = unwrap_symmetric_key(private_key, document["symmetricKey"])
    users = {}
    for item in document.get("userKey") or []:
        if list(item) != ["id", "key", "creationDate", "revisionDate", "lastAccessDate"] and set(item) != {
            "id", "key", "creationDate", "revisionDate", "lastAccessDate"
        }:
            raise FormatError(f"entry properties {sorted(item)} are not upstream's")
        if not LOWER_GUID.match(item["id"]):
            raise FormatError(f"GUID {item['id']!r} is not lower case")
        for name in ("creationDate", "revisionDate", "lastAccessDate"):
            value = item[name]
            if value is not None and not ISO_DATE.match(value):
                raise FormatError(f"{item['id']} {name} {value!r} is not an ISO date ending in Z")
        if item["creationDate"] is None:
            raise FormatError(f"{item['id']} has no creationDate")
        users[item["id"]] = base64.b64encode(open_sealed(symmetric_key, item["key"])).decode()
    return {"users": users}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    for name, target, extra in (
        ("make-sqlite", make_sqlite, "--db"),
        ("make-json", make_json, "--file"),
        ("read-sqlite", read_sqlite, "--db"),
        ("read-json", read_json, "--file"),
    ):
        command = commands.add_parser(name)
        command.add_argument("--pfx", required=True)
        command.add_argument("--password", default="")
        command.add_argument(extra, required=True)
        if name.startswith("make"):
            command.add_argument("--users", type=int, default=10)
            command.add_argument("--seed", type=int)
        command.set_defaults(run=target)
    args = parser.parse_args()
    rng = random.Random(args.seed) if getattr(args, "seed", None) is not None else random.SystemRandom()
    if not hasattr(rng, "randbytes"):
        rng.randbytes = lambda n: bytes(rng.getrandbits(8) for _ in range(n))
    try:
        private_key = load_private_key(args.pfx, args.password)
        result = args.run(args, private_key, rng)
    except (FormatError, ValueError, KeyError, TypeError) as error:
        print(f"upstream_format: {error}", file=sys.stderr)
        return 1
    json.dump(result, sys.stdout, indent=1, sort_keys=True)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
