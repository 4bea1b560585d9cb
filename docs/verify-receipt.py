#!/usr/bin/env python3
"""Verify one handoff receipt with the gateway's public key, independently of handoff.

    python3 verify-receipt.py receipt.pub F0123.delivered.json

Needs only the Python 'cryptography' package (Debian: python3-cryptography).
"""
import base64, json, sys
from cryptography.hazmat.primitives.serialization import load_pem_public_key

public_key = load_pem_public_key(open(sys.argv[1], "rb").read())
receipt = json.load(open(sys.argv[2], encoding="utf-8"))
signature = base64.b64decode(receipt.pop("signature"))
# The signed bytes: every other field as canonical JSON (sorted keys, no spaces, UTF-8).
signed = json.dumps(receipt, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
public_key.verify(signature, signed)  # raises InvalidSignature if it does not verify
print(f"OK: {receipt['id']} ({receipt['hop']} of {receipt['original_name']}, {receipt['time']})")
