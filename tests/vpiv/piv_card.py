#!/usr/bin/env python3
"""Virtual PIV smartcard (NIST SP 800-73-4 subset + YubiKey 5 extensions) for vpcd.

Connects to the vsmartcard vpcd reader driver over TCP and answers its messages:
each message is a 2-byte big-endian length plus payload; a 1-byte payload is a
control (00 power off, 01 power on, 02 reset, 04 "send ATR"), anything else is a
C-APDU answered with an R-APDU.

Signals: SIGUSR1 removes the card (closes the vpcd connection), SIGUSR2 inserts it
again, SIGTERM/SIGINT exit.  Stdout gets "ready" once the card is powered in the
reader for the first time, then "removed" / "inserted" lines.  All persistent
state lives in a JSON file that is rewritten (temp file + rename) after each change.

Only the standard library and `cryptography` are used.  See README.md.
"""
import argparse
import hashlib
import json
import os
import secrets
import select
import signal
import socket
import struct
import sys
import time

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

try:  # cryptography >= 43 moved 3DES; the old name is gone in 48
    from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
except ImportError:  # pragma: no cover - cryptography < 43 (Debian 12 has 38)
    TripleDES = algorithms.TripleDES

# --------------------------------------------------------------------------- constants

PIV_AID = bytes.fromhex("a000000308000010000100")
# YubiKey 5 (USB) ATR; OpenSC's PIV driver binds to it as a YubiKey.
ATR = bytes.fromhex("3bfd1300008131fe158073c021c057597562694b657940")
# Application property template as sent by a YubiKey 4/5 in answer to SELECT.
SELECT_RESPONSE = bytes.fromhex("61114f0600001000010079074f05a000000308")
# Discovery object: PIV AID, PIN usage policy "application PIN only".
DISCOVERY = bytes.fromhex("7e124f0ba0000003080000100001005f2f024000")

DEFAULT_PIN = b"123456"
DEFAULT_PUK = b"12345678"
DEFAULT_MGMT = bytes.fromhex("010203040506070801020304050607080102030405060708")

ALG_RSA1024, ALG_RSA2048, ALG_P256, ALG_P384 = 0x06, 0x07, 0x11, 0x14
RSA_BITS = {ALG_RSA1024: 1024, ALG_RSA2048: 2048}
EC_CURVES = {ALG_P256: (ec.SECP256R1, 32, hashes.SHA256), ALG_P384: (ec.SECP384R1, 48, hashes.SHA384)}
# management key algorithm -> (key length, block size)
MGMT_ALGS = {0x03: (24, 8), 0x08: (16, 16), 0x0A: (24, 16), 0x0C: (32, 16)}

PIN_NEVER, PIN_ONCE, PIN_ALWAYS = 1, 2, 3
TOUCH_NEVER, TOUCH_ALWAYS, TOUCH_CACHED = 1, 2, 3
TOUCH_CACHE_SECONDS = 15
ORIGIN_GENERATED, ORIGIN_IMPORTED = 1, 2

RETIRED = list(range(0x82, 0x96))
KEY_SLOTS = [0x9A, 0x9C, 0x9D, 0x9E] + RETIRED          # GENERATE / --load
IMPORT_SLOTS = KEY_SLOTS + [0xF9]                        # IMPORT KEY also takes attestation
DEFAULT_PIN_POLICY = {0x9A: PIN_ONCE, 0x9C: PIN_ALWAYS, 0x9D: PIN_ONCE, 0x9E: PIN_NEVER, 0xF9: PIN_NEVER}
CERT_OBJECT = {0x9A: 0x5FC105, 0x9C: 0x5FC10A, 0x9D: 0x5FC10B, 0x9E: 0x5FC101, 0xF9: 0x5FFF01}
CERT_OBJECT.update({s: 0x5FC10D + i for i, s in enumerate(RETIRED)})
PIN_PROTECTED_OBJECTS = {0x5FC103, 0x5FC108, 0x5FC109, 0x5FC121}  # fingerprints, face, printed info, iris


class SW(Exception):
    """Abort the current command with the given status word."""

    def __init__(self, sw):
        super().__init__("SW %04X" % sw)
        self.sw = sw


def tries_sw(n):
    return 0x63C0 | min(n, 15)


# --------------------------------------------------------------------------- BER-TLV

def tlv(tag, value=b""):
    n = len(value)
    if n < 0x80:
        ln = bytes([n])
    elif n < 0x100:
        ln = bytes([0x81, n])
    else:
        ln = bytes([0x82]) + n.to_bytes(2, "big")
    return tag.to_bytes(max(1, (tag.bit_length() + 7) // 8), "big") + ln + value


def parse_tlvs(data):
    """Parse concatenated BER-TLVs into a list of (tag, value); multi-byte tags are ints."""
    out, i = [], 0
    try:
        while i < len(data):
            tag = data[i]
            i += 1
            if tag & 0x1F == 0x1F:
                while True:
                    tag = (tag << 8) | data[i]
                    i += 1
                    if not data[i - 1] & 0x80:
                        break
            ln = data[i]
            i += 1
            if ln == 0x81:
                ln = data[i]
                i += 1
            elif ln == 0x82:
                ln = int.from_bytes(data[i:i + 2], "big")
                i += 2
            elif ln >= 0x80:
                raise SW(0x6A80)
            if i + ln > len(data):
                raise SW(0x6A80)
            out.append((tag, bytes(data[i:i + ln])))
            i += ln
    except IndexError:
        raise SW(0x6A80)
    return out


def tlv_dict(data):
    return dict(parse_tlvs(data))


# --------------------------------------------------------------------------- keys

def key_algorithm(priv):
    if isinstance(priv, rsa.RSAPrivateKey):
        for alg, bits in RSA_BITS.items():
            if priv.key_size == bits:
                return alg
    elif isinstance(priv, ec.EllipticCurvePrivateKey):
        for alg, (curve, _, _) in EC_CURVES.items():
            if isinstance(priv.curve, curve):
                return alg
    raise ValueError("unsupported key type (need RSA-1024/2048, P-256 or P-384)")


def public_tlvs(priv):
    """Inner public key encoding of GENERATE (inside 7F49) and GET METADATA tag 04."""
    pub = priv.public_key()
    if isinstance(pub, rsa.RSAPublicKey):
        nums = pub.public_numbers()
        return (tlv(0x81, nums.n.to_bytes((pub.key_size + 7) // 8, "big"))
                + tlv(0x82, nums.e.to_bytes((nums.e.bit_length() + 7) // 8, "big")))
    point = pub.public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
    return tlv(0x86, point)


def pem_of(priv):
    return priv.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                              serialization.NoEncryption()).decode()


def load_priv(pem):
    return serialization.load_pem_private_key(pem.encode(), password=None)


def block_cipher(alg, key):
    return TripleDES(key) if alg == 0x03 else algorithms.AES(key)


def encrypt_block(alg, key, block):
    enc = Cipher(block_cipher(alg, key), modes.ECB()).encryptor()
    return enc.update(block) + enc.finalize()


def pad8(secret):
    return secret + b"\xff" * (8 - len(secret))


def unpad(value):
    """Strip the 0xFF padding of a PIN/PUK field; reject bad lengths/values."""
    v = value.rstrip(b"\xff")
    if not 6 <= len(v) <= 8 or b"\xff" in v:
        raise SW(0x6A80)
    return v


# --------------------------------------------------------------------------- state

def fresh_state(serial, version="5.4.3"):
    return {
        "format": 1,
        "version": version,
        "serial": serial,
        "pin": pad8(DEFAULT_PIN).hex(), "pin_retries": 3, "pin_remaining": 3,
        "puk": pad8(DEFAULT_PUK).hex(), "puk_retries": 3, "puk_remaining": 3,
        "mgmt": {"algorithm": 0x03, "key": DEFAULT_MGMT.hex(), "touch": False},
        "keys": {},      # "9a" -> {algorithm, pin_policy, touch_policy, origin, private_key (PKCS#8 PEM)}
        "objects": {},   # "5fc105" -> hex of the value inside tag 53
    }


def chuid_ccc_objects(serial):
    """CHUID and CCC as `yubico-piv-tool -a set-chuid -a set-ccc` writes them, with a
    GUID / card ID derived from the serial (so several cards stay distinguishable)."""
    uid = hashlib.sha256(b"vpiv-%d" % serial).digest()
    fascn = bytes.fromhex("d4e739da739ced39ce739d836858210842108421c84210c3eb")
    chuid = tlv(0x30, fascn) + tlv(0x34, uid[:16]) + tlv(0x35, b"20300101") + tlv(0x3E) + tlv(0xFE)
    ccc = (tlv(0xF0, bytes.fromhex("a000000116ff02") + uid[16:30]) + bytes.fromhex(
        "f10121f20121f300f40100f50110f600f700fa00fb00fc00fd00fe00"))
    return {"5fc102": chuid.hex(), "5fc107": ccc.hex()}


def cert_object(der):
    """Certificate data object content: 70 cert, 71 compression info, FE LRC."""
    return tlv(0x70, der) + tlv(0x71, b"\x00") + tlv(0xFE)


class Card:
    """The PIV application: persistent state plus per-power-cycle security status."""

    def __init__(self, path, state, touch_delay_ms=0, log=None):
        self.path = path
        self.st = state
        self.touch_delay = touch_delay_ms / 1000.0
        self.log = log or (lambda msg, always=False: None)
        self._keys = {}  # cache of loaded private keys by slot
        self.reset_session()

    # -- persistence ------------------------------------------------------------------
    def save(self):
        tmp = "%s.tmp.%d" % (self.path, os.getpid())
        with open(tmp, "w") as f:
            json.dump(self.st, f, indent=1, sort_keys=True)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)

    def reset_session(self):
        """Power off/on, reset, reconnect: nothing stays verified or authenticated."""
        self.selected = False
        self.clear_security()
        self.chain = None          # (ins, p1, p2, data) of a CLA=10 command chain
        self.pending = b""         # response bytes not yet fetched with GET RESPONSE
        self.touch_time = 0.0

    def clear_security(self):
        self.pin_ok = False        # PIN verified
        self.pin_fresh = False     # VERIFY succeeded and no PIN-always key used since
        self.mgmt_ok = False       # management key authenticated
        self.witness = None        # pending mutual-auth witness
        self.challenge = None      # pending single challenge (external authenticate)

    # -- key storage ------------------------------------------------------------------
    def key(self, slot):
        k = self.st["keys"].get("%02x" % slot)
        if k is None:
            return None, None
        if slot not in self._keys:
            self._keys[slot] = load_priv(k["private_key"])
        return k, self._keys[slot]

    def put_key(self, slot, priv, pin_policy, touch_policy, origin):
        pin_policy = pin_policy or DEFAULT_PIN_POLICY.get(slot, PIN_ONCE)
        touch_policy = touch_policy or TOUCH_NEVER
        self.st["keys"]["%02x" % slot] = {
            "algorithm": key_algorithm(priv), "pin_policy": pin_policy,
            "touch_policy": touch_policy, "origin": origin, "private_key": pem_of(priv)}
        self._keys[slot] = priv

    # -- APDU level ---------------------------------------------------------------------
    def process(self, apdu):
        try:
            if len(apdu) < 4:
                raise SW(0x6700)
            cla, ins, p1, p2 = apdu[:4]
            data, le = b"", 0
            if len(apdu) == 5:
                le = apdu[4]
            elif len(apdu) > 5:
                lc = apdu[4]
                if lc == 0 or len(apdu) not in (5 + lc, 6 + lc):
                    raise SW(0x6700)  # extended length APDUs are not supported
                data = bytes(apdu[5:5 + lc])
                if len(apdu) == 6 + lc:
                    le = apdu[-1]
            if ins == 0xC0:
                return self.get_response(le)
            self.pending = b""
            if cla & ~0x10:
                raise SW(0x6E00)
            if cla & 0x10:  # command chaining: collect, answer later
                if self.chain and self.chain[:3] == (ins, p1, p2):
                    self.chain = (ins, p1, p2, self.chain[3] + data)
                else:
                    self.chain = (ins, p1, p2, data)
                return b"\x90\x00"
            if self.chain:
                if self.chain[:3] == (ins, p1, p2):
                    data = self.chain[3] + data
                self.chain = None
            return self.respond(self.dispatch(ins, p1, p2, data), le)
        except SW as e:
            self.chain = None
            return e.sw.to_bytes(2, "big")

    def respond(self, data, le):
        size = le or 256
        if len(data) <= size:
            return data + b"\x90\x00"
        self.pending = data[size:]
        return data[:size] + bytes([0x61, min(len(self.pending), 256) & 0xFF])

    def get_response(self, le):
        if not self.pending:
            raise SW(0x6985)
        data, self.pending = self.pending, b""
        return self.respond(data, le)

    def dispatch(self, ins, p1, p2, data):
        if ins == 0xA4:
            return self.cmd_select(p1, p2, data)
        if not self.selected:
            raise SW(0x6D00)
        handler = {
            0x20: self.cmd_verify, 0x24: self.cmd_change_reference, 0x2C: self.cmd_reset_retry,
            0x47: self.cmd_generate, 0x87: self.cmd_general_authenticate,
            0xCB: self.cmd_get_data, 0xDB: self.cmd_put_data,
            0xFD: self.cmd_get_version, 0xF8: self.cmd_get_serial, 0xF7: self.cmd_get_metadata,
            0xFF: self.cmd_set_mgmt_key, 0xFA: self.cmd_set_pin_retries, 0xFB: self.cmd_reset,
            0xFE: self.cmd_import_key,
        }.get(ins)
        if handler is None:  # includes ATTEST (F9)
            raise SW(0x6D00)
        return handler(p1, p2, data)

    # -- helpers ----------------------------------------------------------------------
    def require_mgmt(self):
        if not self.mgmt_ok:
            raise SW(0x6982)

    def touch(self, policy):
        if policy == TOUCH_NEVER:
            return
        if policy == TOUCH_CACHED and time.monotonic() - self.touch_time < TOUCH_CACHE_SECONDS:
            return
        self.log("touch", always=True)
        if self.touch_delay:
            time.sleep(self.touch_delay)
        self.touch_time = time.monotonic()

    def check_secret(self, which, value):
        """Compare a padded PIN/PUK, maintaining its retry counter. Raises on failure."""
        if self.st[which + "_remaining"] == 0:
            raise SW(0x6983)
        if len(value) != 8:
            raise SW(0x6A80)
        if secrets.compare_digest(value, bytes.fromhex(self.st[which])):
            if self.st[which + "_remaining"] != self.st[which + "_retries"]:
                self.st[which + "_remaining"] = self.st[which + "_retries"]
                self.save()
            return
        self.st[which + "_remaining"] -= 1
        self.save()
        if which == "pin":
            self.pin_ok = self.pin_fresh = False
        raise SW(tries_sw(self.st[which + "_remaining"]))

    # -- PIV commands -----------------------------------------------------------------
    def cmd_select(self, p1, p2, data):
        if p1 != 0x04:
            raise SW(0x6A86)
        # Like a YubiKey, (re)selecting drops the security status; a failed SELECT
        # leaves no application selected (later commands get 6D00).
        self.clear_security()
        if 5 <= len(data) <= len(PIV_AID) and PIV_AID.startswith(data):
            self.selected = True
            return SELECT_RESPONSE
        self.selected = False
        raise SW(0x6A82)

    def cmd_verify(self, p1, p2, data):
        if p2 != 0x80:
            raise SW(0x6A88)
        if p1 == 0xFF:  # reset security status of the PIN
            self.pin_ok = self.pin_fresh = False
            return b""
        if p1 != 0x00:
            raise SW(0x6A86)
        if not data:  # status query
            if self.pin_ok:
                return b""
            if self.st["pin_remaining"] == 0:
                raise SW(0x6983)
            raise SW(tries_sw(self.st["pin_remaining"]))
        self.check_secret("pin", data)
        self.pin_ok = self.pin_fresh = True
        return b""

    def cmd_change_reference(self, p1, p2, data):
        which = {0x80: "pin", 0x81: "puk"}.get(p2)
        if which is None or p1 != 0:
            raise SW(0x6A88 if p1 == 0 else 0x6A86)
        if len(data) != 16:
            raise SW(0x6A80)
        new = unpad(data[8:])
        self.check_secret(which, data[:8])
        self.st[which] = pad8(new).hex()
        self.save()
        return b""

    def cmd_reset_retry(self, p1, p2, data):
        if p1 != 0 or p2 != 0x80:
            raise SW(0x6A86)
        if len(data) != 16:
            raise SW(0x6A80)
        new = unpad(data[8:])
        self.check_secret("puk", data[:8])
        self.st["pin"] = pad8(new).hex()
        self.st["pin_remaining"] = self.st["pin_retries"]
        self.save()
        return b""

    def cmd_get_data(self, p1, p2, data):
        if (p1, p2) != (0x3F, 0xFF):
            raise SW(0x6A86)
        t = tlv_dict(data)
        if 0x5C not in t:
            raise SW(0x6A80)
        tag = int.from_bytes(t[0x5C], "big")
        if tag == 0x7E:
            return DISCOVERY
        if tag in PIN_PROTECTED_OBJECTS and not self.pin_ok:
            raise SW(0x6982)
        obj = self.st["objects"].get("%x" % tag)
        if obj is None:
            raise SW(0x6A82)
        return tlv(0x53, bytes.fromhex(obj))

    def cmd_put_data(self, p1, p2, data):
        if (p1, p2) != (0x3F, 0xFF):
            raise SW(0x6A86)
        self.require_mgmt()
        items = parse_tlvs(data)
        if len(items) != 2 or items[0][0] != 0x5C or items[1][0] != 0x53:
            raise SW(0x6A80)
        tag = int.from_bytes(items[0][1], "big")
        if len(items[0][1]) != 3 or tag >> 8 not in (0x5FC1, 0x5FFF):
            raise SW(0x6A80)
        if items[1][1]:
            self.st["objects"]["%x" % tag] = items[1][1].hex()
        else:  # empty object = delete
            self.st["objects"].pop("%x" % tag, None)
        self.save()
        return b""

    def cmd_generate(self, p1, p2, data):
        if p1 != 0:
            raise SW(0x6A86)
        if p2 not in KEY_SLOTS:
            raise SW(0x6B00)
        self.require_mgmt()
        t = tlv_dict(data)
        if 0xAC not in t:
            raise SW(0x6A80)
        params = tlv_dict(t[0xAC])
        alg = params.get(0x80, b"\x00")[0]
        pin_policy = params.get(0xAA, b"\x00")[0]
        touch_policy = params.get(0xAB, b"\x00")[0]
        if pin_policy > 3 or touch_policy > 3:
            raise SW(0x6A80)
        if alg in RSA_BITS:
            priv = rsa.generate_private_key(public_exponent=65537, key_size=RSA_BITS[alg])
        elif alg in EC_CURVES:
            priv = ec.generate_private_key(EC_CURVES[alg][0]())
        else:
            raise SW(0x6A80)
        self.put_key(p2, priv, pin_policy, touch_policy, ORIGIN_GENERATED)
        self.save()
        return tlv(0x7F49, public_tlvs(priv))

    def cmd_import_key(self, p1, p2, data):
        if p2 not in IMPORT_SLOTS:
            raise SW(0x6B00)
        self.require_mgmt()
        t = tlv_dict(data)
        pin_policy = t.get(0xAA, b"\x00")[0]
        touch_policy = t.get(0xAB, b"\x00")[0]
        if pin_policy > 3 or touch_policy > 3:
            raise SW(0x6A80)
        try:
            if p1 in RSA_BITS:
                p, q = (int.from_bytes(t[k], "big") for k in (0x01, 0x02))
                e = 65537
                d = pow(e, -1, (p - 1) * (q - 1))
                priv = rsa.RSAPrivateNumbers(
                    p, q, d, rsa.rsa_crt_dmp1(d, p), rsa.rsa_crt_dmq1(d, q), rsa.rsa_crt_iqmp(p, q),
                    rsa.RSAPublicNumbers(e, p * q)).private_key()
                if priv.key_size != RSA_BITS[p1]:
                    raise SW(0x6A80)
            elif p1 in EC_CURVES:
                priv = ec.derive_private_key(int.from_bytes(t[0x06], "big"), EC_CURVES[p1][0]())
            else:
                raise SW(0x6A80)
        except (KeyError, ValueError):
            raise SW(0x6A80)
        self.put_key(p2, priv, pin_policy, touch_policy, ORIGIN_IMPORTED)
        self.save()
        return b""

    def cmd_general_authenticate(self, p1, p2, data):
        outer = tlv_dict(data)
        if 0x7C not in outer:
            raise SW(0x6A80)
        t = tlv_dict(outer[0x7C])
        if p2 == 0x9B:
            return self.mgmt_authenticate(p1, t)
        k, priv = self.key(p2)
        if k is None:
            raise SW(0x6A80 if p2 in IMPORT_SLOTS else 0x6B00)
        if k["algorithm"] != p1:
            raise SW(0x6A80)
        if 0x82 not in t or t[0x82] or (0x81 in t) == (0x85 in t):
            raise SW(0x6A80)
        # security status: PIN policy first, then touch
        if k["pin_policy"] != PIN_NEVER:
            if not self.pin_ok or (k["pin_policy"] == PIN_ALWAYS and not self.pin_fresh):
                raise SW(0x6982)
        self.touch(k["touch_policy"])
        if p1 in RSA_BITS:
            result = self.rsa_private(priv, t.get(0x81))
        elif 0x81 in t:
            result = self.ecdsa_sign(priv, p1, t[0x81])
        else:
            try:
                peer = ec.EllipticCurvePublicKey.from_encoded_point(EC_CURVES[p1][0](), t[0x85])
            except ValueError:
                raise SW(0x6A80)
            result = priv.exchange(ec.ECDH(), peer)
        if k["pin_policy"] == PIN_ALWAYS:  # one VERIFY buys one operation
            self.pin_fresh = False
        return tlv(0x7C, tlv(0x82, result))

    def rsa_private(self, priv, data):
        """Raw RSA private-key operation (sign and decrypt are the same on a PIV card)."""
        size = priv.key_size // 8
        if data is None or len(data) != size:
            raise SW(0x6A80)
        n = priv.private_numbers()
        c = int.from_bytes(data, "big")
        if c >= n.public_numbers.n:
            raise SW(0x6A80)
        m1, m2 = pow(c, n.dmp1, n.p), pow(c, n.dmq1, n.q)  # CRT
        m = m2 + n.q * ((n.iqmp * (m1 - m2)) % n.p)
        return m.to_bytes(size, "big")

    def ecdsa_sign(self, priv, alg, data):
        _, size, hash_cls = EC_CURVES[alg]
        if not data or len(data) > size:  # a YubiKey takes at most the field size
            raise SW(0x6A80)
        digest = data.rjust(size, b"\x00")
        return priv.sign(digest, ec.ECDSA(Prehashed(hash_cls())))

    def mgmt_authenticate(self, p1, t):
        m = self.st["mgmt"]
        if p1 != m["algorithm"]:
            raise SW(0x6A80)
        key = bytes.fromhex(m["key"])
        bs = MGMT_ALGS[p1][1]
        if t.get(0x80) == b"":                 # step 1 of mutual auth: give encrypted witness
            self.witness = secrets.token_bytes(bs)
            return tlv(0x7C, tlv(0x80, encrypt_block(p1, key, self.witness)))
        if 0x80 in t and 0x81 in t:            # step 2: check decrypted witness, answer challenge
            witness, self.witness = self.witness, None
            self.mgmt_ok = False
            if witness is None or len(t[0x81]) != bs or not secrets.compare_digest(t[0x80], witness):
                raise SW(0x6982)
            self.touch(TOUCH_ALWAYS if m["touch"] else TOUCH_NEVER)
            self.mgmt_ok = True
            return tlv(0x7C, tlv(0x82, encrypt_block(p1, key, t[0x81])))
        if t.get(0x81) == b"":                 # external authenticate: give a plain challenge
            self.challenge = secrets.token_bytes(bs)
            return tlv(0x7C, tlv(0x81, self.challenge))
        if 0x82 in t and self.challenge is not None:  # ... and check its encryption
            challenge, self.challenge = self.challenge, None
            self.mgmt_ok = False
            if not secrets.compare_digest(t[0x82], encrypt_block(p1, key, challenge)):
                raise SW(0x6982)
            self.touch(TOUCH_ALWAYS if m["touch"] else TOUCH_NEVER)
            self.mgmt_ok = True
            return b""
        raise SW(0x6A80)

    # -- YubiKey extensions ---------------------------------------------------------------
    def cmd_get_version(self, p1, p2, data):
        return bytes(int(x) for x in self.st["version"].split("."))

    def cmd_get_serial(self, p1, p2, data):
        return self.st["serial"].to_bytes(4, "big")

    def cmd_get_metadata(self, p1, p2, data):
        st = self.st
        if p2 in (0x80, 0x81):
            which = "pin" if p2 == 0x80 else "puk"
            default = bytes.fromhex(st[which]) == pad8(DEFAULT_PIN if p2 == 0x80 else DEFAULT_PUK)
            return (tlv(0x01, b"\xff") + tlv(0x05, bytes([default]))
                    + tlv(0x06, bytes([st[which + "_retries"], st[which + "_remaining"]])))
        if p2 == 0x9B:
            m = st["mgmt"]
            default = m["algorithm"] == 0x03 and bytes.fromhex(m["key"]) == DEFAULT_MGMT
            return (tlv(0x01, bytes([m["algorithm"]]))
                    + tlv(0x02, bytes([0, TOUCH_ALWAYS if m["touch"] else TOUCH_NEVER]))
                    + tlv(0x05, bytes([default])))
        if p2 not in IMPORT_SLOTS:
            raise SW(0x6B00)
        k, priv = self.key(p2)
        if k is None:
            raise SW(0x6A88)
        return (tlv(0x01, bytes([k["algorithm"]])) + tlv(0x02, bytes([k["pin_policy"], k["touch_policy"]]))
                + tlv(0x03, bytes([k["origin"]])) + tlv(0x04, public_tlvs(priv)))

    def cmd_set_mgmt_key(self, p1, p2, data):
        if p1 != 0xFF or p2 not in (0xFE, 0xFF):
            raise SW(0x6A86)
        self.require_mgmt()
        if len(data) < 3 or data[1] != 0x9B or data[0] not in MGMT_ALGS \
                or data[2] != MGMT_ALGS[data[0]][0] or len(data) != 3 + data[2]:
            raise SW(0x6A80)
        self.st["mgmt"] = {"algorithm": data[0], "key": data[3:].hex(), "touch": p2 == 0xFE}
        self.save()
        return b""

    def cmd_set_pin_retries(self, p1, p2, data):
        self.require_mgmt()
        if not self.pin_ok:
            raise SW(0x6982)
        if p1 == 0 or p2 == 0:
            raise SW(0x6A86)
        # like a YubiKey this also resets PIN and PUK to their defaults
        self.st.update(pin=pad8(DEFAULT_PIN).hex(), puk=pad8(DEFAULT_PUK).hex(),
                       pin_retries=p1, pin_remaining=p1, puk_retries=p2, puk_remaining=p2)
        self.save()
        return b""

    def cmd_reset(self, p1, p2, data):
        if self.st["pin_remaining"] or self.st["puk_remaining"]:
            raise SW(0x6985)
        keep_attest = {k: v for k, v in self.st["keys"].items() if k == "f9"}
        keep_obj = {k: v for k, v in self.st["objects"].items() if k == "5fff01"}
        self.st = dict(fresh_state(self.st["serial"], self.st["version"]), keys=keep_attest,
                       objects=keep_obj)
        self._keys = {}
        self.clear_security()
        self.save()
        return b""


# --------------------------------------------------------------------------- vpcd link

class Runner:
    def __init__(self, card, host, port, connect_timeout, verbose):
        self.card, self.host, self.port = card, host, port
        self.connect_timeout = connect_timeout
        self.verbose = verbose
        self.sock = None
        self.inserted = True
        self.signals = []
        self.announced = False   # "ready" printed
        self.announce_due = False
        self.powered = False

    def log(self, msg, always=False):
        if always or self.verbose:
            print("piv_card[%d]: %s" % (self.port, msg), file=sys.stderr, flush=True)

    @staticmethod
    def emit(line):
        try:
            print(line, flush=True)
        except (BrokenPipeError, OSError):
            pass

    def on_signal(self, signum, frame):
        self.signals.append(signum)

    def connect(self):
        deadline = time.monotonic() + self.connect_timeout
        while True:
            self.handle_signals()
            if not self.inserted:
                return
            try:
                s = socket.create_connection((self.host, self.port), timeout=2)
                s.settimeout(None)
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                self.sock = s
                self.card.reset_session()
                self.announce_due = True
                self.powered = False
                self.log("connected to vpcd %s:%d" % (self.host, self.port))
                return
            except OSError as e:
                if time.monotonic() > deadline:
                    self.log("cannot connect to vpcd at %s:%d: %s" % (self.host, self.port, e), always=True)
                    sys.exit(3)
                time.sleep(0.1)

    def disconnect(self):
        if self.sock is not None:
            try:
                self.sock.close()
            except OSError:
                pass
        self.sock = None
        self.card.reset_session()

    def handle_signals(self):
        while self.signals:
            sig = self.signals.pop(0)
            if sig in (signal.SIGTERM, signal.SIGINT):
                self.log("exiting")
                self.disconnect()
                sys.exit(0)
            if sig == signal.SIGUSR1 and self.inserted:
                self.inserted = False
                self.disconnect()
                self.log("card removed")
                self.emit("removed")
            elif sig == signal.SIGUSR2 and not self.inserted:
                self.inserted = True
                self.log("card inserted")

    def recv_exact(self, n):
        buf = b""
        while len(buf) < n:
            try:
                # vpcd writes length and payload separately without TCP_NODELAY; ACK at
                # once so Nagle on its side does not stall every message by ~40 ms.
                if hasattr(socket, "TCP_QUICKACK"):
                    self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 1)
                chunk = self.sock.recv(n - len(buf))
            except OSError:
                return None
            if not chunk:
                return None
            buf += chunk
        return buf

    def send(self, payload):
        self.sock.sendall(struct.pack("!H", len(payload)) + payload)

    def handle_message(self):
        hdr = self.recv_exact(2)
        msg = self.recv_exact(struct.unpack("!H", hdr)[0]) if hdr else None
        if msg is None:
            self.log("vpcd closed the connection", always=True)
            self.disconnect()
            return
        if len(msg) == 1:
            ctrl = msg[0]
            if ctrl in (0x00, 0x01, 0x02):
                self.log({0: "power off", 1: "power on", 2: "reset"}[ctrl])
                self.card.reset_session()
                self.powered = ctrl != 0x00
            elif ctrl == 0x04:
                self.send(ATR)
                if self.powered and self.announce_due:
                    self.announce_due = False
                    self.emit("inserted" if self.announced else "ready")
                    self.announced = True
            else:
                self.log("unknown control %02x" % ctrl, always=True)
            return
        self.log("> " + msg.hex())
        resp = self.card.process(msg)
        self.log("< " + resp.hex())
        self.send(resp)

    def run(self):
        wake_r, wake_w = os.pipe()
        os.set_blocking(wake_r, False)
        os.set_blocking(wake_w, False)
        signal.set_wakeup_fd(wake_w)
        for s in (signal.SIGUSR1, signal.SIGUSR2, signal.SIGTERM, signal.SIGINT):
            signal.signal(s, self.on_signal)
        while True:
            self.handle_signals()
            if self.inserted and self.sock is None:
                self.connect()
                continue
            fds = [wake_r] + ([self.sock] if self.sock else [])
            ready, _, _ = select.select(fds, [], [])
            if wake_r in ready:
                try:
                    os.read(wake_r, 512)
                except BlockingIOError:
                    pass
            if self.sock is not None and self.sock in ready:
                self.handle_message()


# --------------------------------------------------------------------------- CLI

def load_into(card, spec):
    """--load SLOT:KEY.pem:CERT.pem"""
    try:
        slot_s, key_path, cert_path = spec.split(":", 2)
        slot = int(slot_s, 16)
    except ValueError:
        sys.exit("--load expects SLOT:KEY.pem:CERT.pem, got %r" % spec)
    if slot not in KEY_SLOTS:
        sys.exit("--load: slot %02x is not a key slot (9a/9c/9d/9e/82..95)" % slot)
    with open(key_path, "rb") as f:
        priv = serialization.load_pem_private_key(f.read(), password=None)
    with open(cert_path, "rb") as f:
        raw = f.read()
    cert = x509.load_pem_x509_certificate(raw) if b"-----BEGIN" in raw else x509.load_der_x509_certificate(raw)
    try:
        card.put_key(slot, priv, 0, 0, ORIGIN_IMPORTED)
    except ValueError as e:
        sys.exit("--load %s: %s" % (spec, e))
    der = cert.public_bytes(serialization.Encoding.DER)
    card.st["objects"]["%x" % CERT_OBJECT[slot]] = cert_object(der).hex()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--state", required=True, help="JSON state file")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True, help="vpcd port of the reader slot")
    ap.add_argument("--serial", type=int, help="card serial number (default 10000000 on --init)")
    ap.add_argument("--init", action="store_true", help="create a fresh state file (overwrites)")
    ap.add_argument("--chuid", action="store_true", help="write CHUID and CCC objects (a fresh YubiKey has none)")
    ap.add_argument("--load", action="append", default=[], metavar="SLOT:KEY.pem:CERT.pem")
    ap.add_argument("--touch-delay", type=int, default=0, metavar="MS")
    ap.add_argument("--connect-timeout", type=float, default=10.0, metavar="SECONDS")
    ap.add_argument("--verbose", action="store_true")
    args = ap.parse_args()

    if args.init:
        state = fresh_state(args.serial if args.serial is not None else 10000000)
    else:
        try:
            with open(args.state) as f:
                state = json.load(f)
        except FileNotFoundError:
            sys.exit("state file %s does not exist (use --init)" % args.state)
        if args.serial is not None:
            state["serial"] = args.serial
    card = Card(args.state, state, args.touch_delay)
    if args.chuid:
        state["objects"].update(chuid_ccc_objects(state["serial"]))
    for spec in args.load:
        load_into(card, spec)
    card.save()
    runner = Runner(card, args.host, args.port, args.connect_timeout, args.verbose)
    card.log = runner.log
    runner.run()


if __name__ == "__main__":
    main()
