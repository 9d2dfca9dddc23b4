#!/usr/bin/python3
"""
mlflow_format.py
    An independent implementation of the secretenv / MLflow envelope format,
    used by the TAP tests to prove that secretenv writes and reads exactly
    the documented bytes.

It uses only the `cryptography` package (Debian python3-cryptography) and no
secretenv or MLflow code.  The format (DESIGN.md section 1):

    KEK             = PBKDF2-HMAC-SHA256(passphrase UTF-8,
                                         salt || be32(version), 600000, 32)
    encrypted_value = nonce(12) || AES-256-GCM(DEK, plaintext,
                                  AAD = UTF-8(secret_id "|" secret_name)) || tag(16)
    wrapped_dek     = nonce(12) || AES-256-GCM(KEK, DEK, no AAD) || tag(16)

An empty passphrase means MLflow's (and secretenv's) development passphrase.

Command line (JSON lines on stdin, one JSON line out per line in):

    mlflow_format.py decrypt   (the default)
        in:  passphrase, salt, version, secret_id, secret_name,
             encrypted_value_hex, wrapped_dek_hex   (kek_hex may replace
             passphrase/salt/version)
        out: {"ok": true, "plaintext_hex": ...} or
             {"ok": false, "error": "length" | "unwrap" | "open" | ...}
    mlflow_format.py encrypt
        in:  passphrase, salt, version (or kek_hex), secret_id, secret_name,
             plaintext_hex
        out: {"ok": true, "encrypted_value_hex": ..., "wrapped_dek_hex": ...,
              "kek_version": ...}
    mlflow_format.py selftest VECTOR_DIR
        checks this implementation against MLflow's own vectors (kek.json
        KEKs, secrets.json decryptions and deterministic known answers);
        one JSON line per check.

A "tag" field of an input line is copied to its output line.  Passphrases
travel on stdin only, never on a command line.
"""

import hashlib
import json
import os
import struct
import sys

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.pbkdf2 import PBKDF2HMAC

DEVELOPMENT_PASSPHRASE = "mlflow-default-kek-passphrase-for-development-only"
MLFLOW_SALT = "mlflow-secrets-kek-v1-2025"
SECRETENV_DEFAULT_SALT = "secretenv-kek-v1"
PBKDF2_ITERATIONS = 600000
KEY_LEN = 32
NONCE_LEN = 12
TAG_LEN = 16
WRAPPED_DEK_LEN = NONCE_LEN + KEY_LEN + TAG_LEN  # 60
SEAL_OVERHEAD = NONCE_LEN + TAG_LEN  # 28


class FormatError(Exception):
    """A rejection; .stage says which check failed."""

    def __init__(self, stage, message):
        super().__init__(message)
        self.stage = stage


def _utf8(s):
    return s if isinstance(s, bytes) else s.encode("utf-8")


def effective_passphrase(passphrase):
    """An empty (or missing) passphrase means the development passphrase."""
    return DEVELOPMENT_PASSPHRASE if passphrase in (None, "", b"") else passphrase


def derive_kek(passphrase, salt, version):
    """KEK = PBKDF2-HMAC-SHA256(passphrase, salt || be32(version), 600000, 32).

    The passphrase is used exactly as given (no Unicode normalisation and no
    development-passphrase substitution: see effective_passphrase).
    """
    if not 0 <= version <= 0xFFFFFFFF:
        raise FormatError("version", "version does not fit in 4 unsigned bytes")
    kdf = PBKDF2HMAC(algorithm=hashes.SHA256(), length=KEY_LEN,
                     salt=_utf8(salt) + struct.pack(">I", version),
                     iterations=PBKDF2_ITERATIONS)
    return kdf.derive(_utf8(passphrase))


def aad(secret_id, secret_name):
    return _utf8(secret_id) + b"|" + _utf8(secret_name)


def _seal(key, plaintext, associated, nonce=None):
    if nonce is None:
        nonce = os.urandom(NONCE_LEN)
    if len(nonce) != NONCE_LEN:
        raise FormatError("nonce", "a nonce is 12 bytes")
    return nonce + AESGCM(key).encrypt(nonce, plaintext, associated)


def _open(key, sealed, associated, stage):
    if len(sealed) < SEAL_OVERHEAD:
        raise FormatError("length", "%s: shorter than nonce + tag" % stage)
    try:
        return AESGCM(key).decrypt(sealed[:NONCE_LEN], sealed[NONCE_LEN:], associated)
    except InvalidTag:
        raise FormatError(stage, "%s: GCM tag check failed" % stage) from None


def wrap_dek(dek, kek, nonce=None):
    if len(dek) != KEY_LEN or len(kek) != KEY_LEN:
        raise FormatError("length", "DEK and KEK are 32 bytes")
    return _seal(kek, dek, None, nonce)


def unwrap_dek(wrapped_dek, kek):
    if len(wrapped_dek) != WRAPPED_DEK_LEN:
        raise FormatError("length", "a wrapped DEK is 60 bytes")
    dek = _open(kek, wrapped_dek, None, "unwrap")
    if len(dek) != KEY_LEN:
        raise FormatError("length", "the DEK is not 32 bytes")
    return dek


def encrypt(plaintext, kek, secret_id, secret_name, dek=None,
            value_nonce=None, wrap_nonce=None):
    """Return (encrypted_value, wrapped_dek) for plaintext bytes (or str).

    A fresh random DEK and random nonces unless given (the fixed ones exist
    only for the known-answer self-test).
    """
    if dek is None:
        dek = os.urandom(KEY_LEN)
    value = _seal(dek, _utf8(plaintext), aad(secret_id, secret_name), value_nonce)
    return value, wrap_dek(dek, kek, wrap_nonce)


def decrypt(encrypted_value, wrapped_dek, kek, secret_id, secret_name):
    """Return the plaintext bytes, or raise FormatError."""
    if len(wrapped_dek) != WRAPPED_DEK_LEN:
        raise FormatError("length", "a wrapped DEK is 60 bytes")
    if len(encrypted_value) < SEAL_OVERHEAD:
        raise FormatError("length", "an encrypted value is at least 28 bytes")
    dek = unwrap_dek(wrapped_dek, kek)
    return _open(dek, encrypted_value, aad(secret_id, secret_name), "open")


def rewrap(wrapped_dek, old_kek, new_kek):
    return wrap_dek(unwrap_dek(wrapped_dek, old_kek), new_kek)


class KekCache:
    """One PBKDF2 per (passphrase, salt, version) per run."""

    def __init__(self):
        self.keks = {}

    def kek_for(self, req):
        if req.get("kek_hex") is not None:
            return bytes.fromhex(req["kek_hex"])
        version = int(req["version"])
        key = (effective_passphrase(req.get("passphrase")),
               req.get("salt", MLFLOW_SALT), version)
        # Keyed by a digest so that passphrases are not kept around as text.
        digest = hashlib.sha256(json.dumps(key).encode("utf-8")).hexdigest()
        if digest not in self.keks:
            self.keks[digest] = derive_kek(key[0], key[1], version)
        return self.keks[digest]


def _reply(req, result):
    if "tag" in req:
        result["tag"] = req["tag"]
    return result


def cli_decrypt(req, cache):
    try:
        pt = decrypt(bytes.fromhex(req["encrypted_value_hex"]),
                     bytes.fromhex(req["wrapped_dek_hex"]),
                     cache.kek_for(req), req["secret_id"], req["secret_name"])
    except FormatError as e:
        return _reply(req, {"ok": False, "error": e.stage, "message": str(e)})
    return _reply(req, {"ok": True, "plaintext_hex": pt.hex()})


def cli_encrypt(req, cache):
    value, wrapped = encrypt(bytes.fromhex(req["plaintext_hex"]), cache.kek_for(req),
                             req["secret_id"], req["secret_name"])
    return _reply(req, {"ok": True, "encrypted_value_hex": value.hex(),
                        "wrapped_dek_hex": wrapped.hex(),
                        "kek_version": req.get("version")})


def _load(vector_dir, name):
    with open(os.path.join(vector_dir, name), "rb") as f:
        return json.loads(f.read().decode("utf-8"))


def selftest(vector_dir):
    """Yield one result per check of this implementation against MLflow's vectors."""
    for case in _load(vector_dir, "kek.json")["cases"]:
        got = derive_kek(effective_passphrase(case["passphrase"]), MLFLOW_SALT,
                         case["kek_version"]).hex()
        yield {"check": "kek/" + case["name"], "ok": got == case["kek_hex"]}
    for case in _load(vector_dir, "secrets.json")["cases"]:
        kek = bytes.fromhex(case["kek_hex"])
        try:
            pt = decrypt(bytes.fromhex(case["encrypted_value_hex"]),
                         bytes.fromhex(case["wrapped_dek_hex"]), kek,
                         case["secret_id"], case["secret_name"]).hex()
        except FormatError as e:
            pt = "error: " + str(e)
        yield {"check": "decrypt/" + case["name"], "ok": pt == case["plaintext_utf8_hex"]}
        if case.get("deterministic"):
            value, wrapped = encrypt(bytes.fromhex(case["plaintext_utf8_hex"]), kek,
                                     case["secret_id"], case["secret_name"],
                                     dek=bytes.fromhex(case["dek_hex"]),
                                     value_nonce=bytes.fromhex(case["value_nonce_hex"]),
                                     wrap_nonce=bytes.fromhex(case["wrap_nonce_hex"]))
            yield {"check": "known-answer/" + case["name"],
                   "ok": value.hex() == case["encrypted_value_hex"]
                   and wrapped.hex() == case["wrapped_dek_hex"]}
    for case in _load(vector_dir, "rotation.json")["cases"]:
        value = bytes.fromhex(case["encrypted_value_hex"])
        results = []
        for wrapped, kek in (("wrapped_dek_hex_before", "old_kek_hex"),
                             ("wrapped_dek_hex_after", "new_kek_hex")):
            try:
                results.append(decrypt(value, bytes.fromhex(case[wrapped]),
                                       bytes.fromhex(case[kek]), case["secret_id"],
                                       case["secret_name"]).hex())
            except FormatError as e:
                results.append("error: " + str(e))
        yield {"check": "rotation/" + case["name"],
               "ok": results == [case["plaintext_utf8_hex"]] * 2}
    cache = KekCache()
    for case in _load(vector_dir, "negative.json")["cases"]:
        try:
            kek = cache.kek_for({"passphrase": case["passphrase"], "salt": MLFLOW_SALT,
                                 "version": case["kek_version"]})
            decrypt(bytes.fromhex(case["encrypted_value_hex"]),
                    bytes.fromhex(case["wrapped_dek_hex"]), kek,
                    case["secret_id"], case["secret_name"])
            rejected = False
        except FormatError:
            rejected = True
        yield {"check": "negative/" + case["name"], "ok": rejected}


def main(argv):
    mode = argv[1] if len(argv) > 1 else "decrypt"
    if mode == "selftest":
        if len(argv) != 3:
            sys.stderr.write("usage: mlflow_format.py selftest VECTOR_DIR\n")
            return 2
        for result in selftest(argv[2]):
            print(json.dumps(result))
        return 0
    handlers = {"decrypt": cli_decrypt, "encrypt": cli_encrypt}
    if mode not in handlers or len(argv) > 2:
        sys.stderr.write("usage: mlflow_format.py [decrypt|encrypt|selftest VECTOR_DIR] < json-lines\n")
        return 2
    cache = KekCache()
    stdin = sys.stdin.buffer.read().decode("utf-8")
    for line in stdin.splitlines():
        if not line.strip():
            continue
        try:
            req = json.loads(line)
            reply = handlers[mode](req, cache)
        except (FormatError, ValueError, KeyError, TypeError, AttributeError) as e:
            reply = {"ok": False, "error": "bad-request", "message": type(e).__name__}
        print(json.dumps(reply))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
