#!/usr/bin/env python3
"""Verify handoff receipts with the gateway's public key, independently of handoff.

One receipt:

    python3 verify-receipt.py receipt.pub F0123.delivered.json

An offline export medium (docs/offline.md): the folder holding manifest.json, the sealed files
and receipts/, checked through its manifest:

    python3 verify-receipt.py receipt.pub DIR/manifest.json

This checks the manifest's signature; for every file listed, that DIR/<name> has the size and
SHA-256 the manifest gives; that every receipt listed is in DIR/receipts/<id>.json, verifies, is
about that file and, where it names the sealed file's SHA-256, names this one; and that the file
was handed over: its `retrieved` receipt (channel `offline` and the manifest's operator as its
actor, unless the file was exported again after an earlier hand-over, which is then named). It prints one OK line per file and one for the manifest, or `FAILED: ...`
on standard error and exits 1.

Use the gateway's published receipt.pub (docs/receipts.md), never a key found on the medium.
Needs only the Python 'cryptography' package (Debian: python3-cryptography).
"""
import base64, binascii, hashlib, json, os, stat, sys, unicodedata
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import load_pem_public_key

EXPORT_KIND = "handoff.export"
CHUNK = 1 << 20  # files on a medium can be GiB: hash them in pieces


class Failed(Exception):
    """One check did not hold; the message says which."""


def canonical(document):
    # The signed bytes: every field but "signature" as canonical JSON (sorted keys, no spaces, UTF-8).
    fields = {k: v for k, v in document.items() if k != "signature"}
    return json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def check_signature(public_key, document, what):
    signature = document.get("signature")
    if not isinstance(signature, str):
        raise Failed(f"{what}: no signature")
    try:
        raw = base64.b64decode(signature, validate=True)
    except (binascii.Error, ValueError):
        raise Failed(f"{what}: the signature is not base64")
    try:
        public_key.verify(raw, canonical(document))
    except InvalidSignature:
        raise Failed(f"{what}: the signature does not verify with this key (changed, or another gateway's key)")


KINDS = {str: "a string", int: "an integer", list: "a list"}


def field(document, key, kind, what):
    value = document.get(key)
    if kind is int:
        ok = type(value) is int  # not bool
    else:
        ok = isinstance(value, kind)
    if not ok:
        raise Failed(f'{what}: field "{key}" missing or not {KINDS[kind]}')
    return value


def plain_name(name, what):
    """A file name in one folder, as in a box: no path, nothing hidden, so nothing that climbs out
    ("." and ".." start with a dot)."""
    if (
        not name
        or "/" in name
        or "\\" in name
        or name.startswith(".")
        or any(unicodedata.category(c) == "Cc" for c in name)
    ):
        raise Failed(f"{what}: {name!r} is not a plain file name")
    return name


def sha256_of(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            chunk = f.read(CHUNK)
            if not chunk:
                return digest.hexdigest()
            digest.update(chunk)


def load_json(folder, name, what):
    try:
        with open(os.path.join(folder, name), encoding="utf-8") as f:
            document = json.load(f)
    except FileNotFoundError:
        raise Failed(f"{what}: {name} is missing from the medium")
    except (OSError, ValueError) as e:
        raise Failed(f"{what}: {name} cannot be read as JSON: {e}")
    if not isinstance(document, dict):
        raise Failed(f"{what}: {name} is not a JSON object")
    return document


def verify_file(public_key, manifest, entry, number, folder):
    what = f"files[{number}]"
    if not isinstance(entry, dict):
        raise Failed(f"{what}: not an object")
    file_id = field(entry, "file_id", str, what)
    what = f"file {file_id}"
    name = plain_name(field(entry, "name", str, what), what)
    if name == "manifest.json" or name == "receipts":
        raise Failed(f"{what}: {name!r} is not a plain file name")
    original_name = field(entry, "original_name", str, what)
    field(entry, "sender", str, what)
    size = field(entry, "size", int, what)
    sha256 = field(entry, "sha256", str, what).lower()
    receipt_ids = field(entry, "receipts", list, what)

    path = os.path.join(folder, name)
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        raise Failed(f"{what}: {name} is missing from the medium")
    except OSError as e:
        raise Failed(f"{what}: {name}: {e}")
    if not stat.S_ISREG(info.st_mode):
        raise Failed(f"{what}: {name} is not a regular file")
    if info.st_size != size:
        raise Failed(f"{what}: {name} has {info.st_size} bytes, the manifest says {size}")
    try:
        actual = sha256_of(path)
    except OSError as e:
        raise Failed(f"{what}: {name} cannot be read: {e}")
    if actual != sha256:
        raise Failed(f"{what}: {name} has SHA-256 {actual}, the manifest says {sha256}")

    operator = manifest["operator"]
    handed_over = False
    seen = set()
    for receipt_id in receipt_ids:
        if not isinstance(receipt_id, str):
            raise Failed(f"{what}: a receipt id is not a string")
        if receipt_id in seen:
            raise Failed(f"{what}: receipt {receipt_id} is listed twice")
        seen.add(receipt_id)
        plain_name(receipt_id, f"{what}: receipt id")
        where = f"receipt {receipt_id}"
        receipt = load_json(folder, f"receipts/{receipt_id}.json", where)
        check_signature(public_key, receipt, where)
        if receipt.get("id") != receipt_id:
            raise Failed(f"{where}: the file holds receipt {receipt.get('id')!r}")
        if receipt.get("file_id") != file_id:
            raise Failed(f"{where}: it is about file {receipt.get('file_id')!r}, not {file_id}")
        if receipt_id != f"{file_id}.{receipt.get('hop')}":
            raise Failed(f"{where}: its hop is {receipt.get('hop')!r}")
        sealed = receipt.get("sealed_sha256")
        if sealed is not None and str(sealed).lower() != sha256:
            raise Failed(f"{where}: names sealed SHA-256 {sealed}, the file on the medium has {sha256}")
        if receipt.get("hop") == "retrieved":
            handed_over = receipt
    if not handed_over:
        raise Failed(f'{what}: no "retrieved" receipt (the hand-over) among its receipts')
    note = ""
    if handed_over.get("channel") != "offline" or handed_over.get("actor") != operator:
        # Exported again (--again): the hand-over was an earlier one.
        note = (
            f"; handed over before, {handed_over.get('time')}, to {handed_over.get('actor')} "
            f"over {handed_over.get('channel')}: this medium is a further copy"
        )
    print(f"OK: {file_id} {original_name} ({len(receipt_ids)} receipts{note})")


def verify_export(key_path, key_bytes, manifest_path, manifest):
    folder = os.path.dirname(os.path.abspath(manifest_path))
    real_folder = os.path.realpath(folder)
    try:
        on_medium = os.path.commonpath([os.path.realpath(key_path), real_folder]) == real_folder
    except ValueError:  # another drive
        on_medium = False
    if on_medium:
        raise Failed(
            f"the key {key_path} lies on the medium itself: "
            "use the gateway's published receipt key"
        )
    if isinstance(key_bytes, OSError):
        raise Failed(f"{key_path} cannot be read: {key_bytes.strerror}")
    try:
        public_key = load_pem_public_key(key_bytes)
    except (ValueError, TypeError) as e:
        raise Failed(f"{key_path} is not a PEM public key: {e}")
    if not isinstance(public_key, Ed25519PublicKey):
        raise Failed(f"{key_path} is not an Ed25519 public key (the gateway's receipt.pub)")

    what = "manifest"
    check_signature(public_key, manifest, what)
    export_id = field(manifest, "id", str, what)
    field(manifest, "time", str, what)
    counterpart = field(manifest, "counterpart", str, what)
    operator = field(manifest, "operator", str, what)
    files = field(manifest, "files", list, what)
    if not files:
        raise Failed(f"manifest {export_id}: lists no files")

    file_ids, names = set(), set()
    for entry in files:
        if isinstance(entry, dict):
            file_id, name = entry.get("file_id"), entry.get("name")
            if file_id in file_ids:
                raise Failed(f"manifest {export_id}: file {file_id} is listed twice")
            if name in names:
                raise Failed(f"manifest {export_id}: {name} is listed twice")
            file_ids.add(file_id)
            names.add(name)
    for number, entry in enumerate(files):
        verify_file(public_key, manifest, entry, number, folder)
    print(f"OK: manifest {export_id}: {len(files)} files for {counterpart}, handed over by {operator}")


def main():
    if len(sys.argv) != 3:
        print(__doc__.strip().splitlines()[0], file=sys.stderr)
        print("usage: verify-receipt.py receipt.pub RECEIPT.json | DIR/manifest.json", file=sys.stderr)
        sys.exit(2)
    try:
        key_bytes = open(sys.argv[1], "rb").read()
    except OSError as e:
        key_bytes = e  # reported below: a traceback for a receipt, as always; FAILED for a manifest
    document = json.load(open(sys.argv[2], encoding="utf-8"))
    if isinstance(document, dict) and document.get("kind") == EXPORT_KIND:
        try:
            verify_export(sys.argv[1], key_bytes, sys.argv[2], document)
        except Failed as e:
            print(f"FAILED: {e}", file=sys.stderr)
            sys.exit(1)
        return

    # One receipt.
    if isinstance(key_bytes, OSError):
        raise key_bytes
    public_key = load_pem_public_key(key_bytes)
    receipt = document
    signature = base64.b64decode(receipt.pop("signature"))
    # The signed bytes: every other field as canonical JSON (sorted keys, no spaces, UTF-8).
    signed = json.dumps(receipt, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    public_key.verify(signature, signed)  # raises InvalidSignature if it does not verify
    print(f"OK: {receipt['id']} ({receipt['hop']} of {receipt['original_name']}, {receipt['time']})")


if __name__ == "__main__":
    main()
