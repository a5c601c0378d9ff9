#!/usr/bin/env python3
"""A SASL-authenticating Kafka proxy for the SASL tests.

    sasl_proxy.py LISTEN_PORT TARGET_HOST:TARGET_PORT USER PASSWORD [CERT KEY]
    OIDC_PORT=N sasl_proxy.py ...   (also serves an OIDC token endpoint on port N)

nisshi 0.6.0's own `--authentication` mode closed the connection during librdkafka's SASL
handshake, and no other broker is available here. So this proxy authenticates each client the
way a Kafka broker does, then forwards its bytes unchanged to the (plaintext) broker:

- ApiVersions is forwarded, and the answer advertises SaslHandshake (key 17) and
  SaslAuthenticate (key 36) at versions 0-1;
- SaslHandshake v1 (KIP-43) selects SCRAM-SHA-256, SCRAM-SHA-512 (RFC 5802, RFC 7677), PLAIN
  or OAUTHBEARER (RFC 7628, KIP-255);
- SaslAuthenticate v0-1 (KIP-152) carries the exchange. A wrong password gets error 58
  (SASL_AUTHENTICATION_FAILED) and the connection is closed, as a broker does;
- any other request before authentication closes the connection.

With OIDC_PORT set, an OAuth 2.0 token endpoint listens on that port (plain HTTP, path /token):
the client-credentials grant (RFC 6749 4.4) with HTTP Basic client authentication, client id USER
and client secret PASSWORD, issues a JWT signed with HS256 by a key of this process, with `sub`
USER and `exp` an hour ahead. OAUTHBEARER accepts only such a token, unexpired, for USER: what a
broker with an OIDC validator (KIP-768) checks, minus the JWKS fetch.

With CERT and KEY the listener is TLS (SASL_SSL). SIGUSR1 changes the password to
PASSWORD + "-rotated" and drops every connection: a credential rotation the client missed.
Prints "ready" once listening. Python's standard library only.
"""
import asyncio
import base64
import hashlib
import hmac
import json
import os
import signal
import ssl
import struct
import sys
import time

from tls_proxy import pipe  # same directory: the script's own is on sys.path

API_VERSIONS, SASL_HANDSHAKE, SASL_AUTHENTICATE = 18, 17, 36
SASL_AUTHENTICATION_FAILED, UNSUPPORTED_SASL_MECHANISM, ILLEGAL_SASL_STATE = 58, 33, 34
MECHANISMS = {"SCRAM-SHA-256": hashlib.sha256, "SCRAM-SHA-512": hashlib.sha512, "PLAIN": None, "OAUTHBEARER": None}
ITERATIONS = 4096
# The token endpoint's signing key: tokens from another process (or forged) are refused.
SIGNING_KEY = os.urandom(32)

state = {"password": "", "connections": set()}


def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64url_decode(text):
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def issue_token(user, now):
    header = b64url(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    claims = b64url(json.dumps({"sub": user, "iat": int(now), "exp": int(now) + 3600}).encode())
    signature = hmac.new(SIGNING_KEY, f"{header}.{claims}".encode(), hashlib.sha256).digest()
    return f"{header}.{claims}.{b64url(signature)}"


def oauthbearer(message, user, _password):
    """RFC 7628 client response: gs2 header, then \x01-separated key=value pairs with
    `auth=Bearer <token>`. The token must be one this process issued, for `user`, unexpired."""
    fields = dict(kv.split("=", 1) for kv in message.decode().split("\x01")[1:] if "=" in kv)
    token = fields.get("auth", "").removeprefix("Bearer ")
    try:
        header, claims, signature = token.split(".")
        expected = hmac.new(SIGNING_KEY, f"{header}.{claims}".encode(), hashlib.sha256).digest()
        payload = json.loads(b64url_decode(claims))
    except ValueError:
        return None, False, "a malformed token"
    if not hmac.compare_digest(b64url_decode(signature), expected):
        return None, False, "a token this issuer did not sign"
    if payload.get("sub") != user or payload.get("exp", 0) <= time.time():
        return None, False, "an expired token or another subject"
    return b"", True, None


async def token_endpoint(reader, writer):
    """One HTTP/1.1 request: POST /token, grant_type=client_credentials, Basic client auth."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        headers = {k.strip().lower(): v.strip() for k, _, v in (l.partition(":") for l in lines[1:] if l)}
        body = await reader.readexactly(int(headers.get("content-length", "0")))
        authorization = headers.get("authorization", "")
        expected = "Basic " + base64.b64encode(f"{state['user']}:{state['password']}".encode()).decode()
        if not lines[0].startswith("POST /token ") or b"grant_type=client_credentials" not in body:
            status, reply = "400 Bad Request", {"error": "invalid_request"}
        elif not hmac.compare_digest(authorization.encode(), expected.encode()):
            status, reply = "401 Unauthorized", {"error": "invalid_client"}
        else:
            token = issue_token(state["user"], time.time())
            status, reply = "200 OK", {"access_token": token, "token_type": "Bearer", "expires_in": 3600}
        data = json.dumps(reply).encode()
        writer.write(
            f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {len(data)}\r\n"
            f"Connection: close\r\n\r\n".encode() + data
        )
        await writer.drain()
    except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError):
        pass
    finally:
        writer.close()


async def read_frame(reader):
    size = struct.unpack(">i", await reader.readexactly(4))[0]
    return await reader.readexactly(size)


def write_frame(writer, data):
    writer.write(struct.pack(">i", len(data)) + data)


def kstring(s):
    if s is None:
        return struct.pack(">h", -1)
    b = s.encode()
    return struct.pack(">h", len(b)) + b


def kbytes(b):
    return struct.pack(">i", len(b)) + b


def uvarint(data, at):
    shift = value = 0
    while True:
        b = data[at]
        at += 1
        value |= (b & 0x7F) << shift
        if not b & 0x80:
            return value, at
        shift += 7


def put_uvarint(n):
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def skip_tags(data, at):
    count, at = uvarint(data, at)
    for _ in range(count):
        _, at = uvarint(data, at)
        size, at = uvarint(data, at)
        at += size
    return at


def advertise_sasl(response, version):
    """The broker's ApiVersions answer with keys 17 and 36 at versions 0-1 (what librdkafka
    speaks), whatever the broker said about them."""
    corr, error = struct.unpack(">ih", response[:6])
    if error != 0:
        return response
    at = 6
    flexible = version >= 3
    if flexible:
        count, at = uvarint(response, at)
        count -= 1
    else:
        count = struct.unpack(">i", response[at:at + 4])[0]
        at += 4
    apis = {}
    for _ in range(count):
        key, lo, hi = struct.unpack(">hhh", response[at:at + 6])
        at += 6
        if flexible:
            at = skip_tags(response, at)
        apis[key] = (lo, hi)
    rest = response[at:]
    apis[SASL_HANDSHAKE] = (0, 1)
    apis[SASL_AUTHENTICATE] = (0, 1)
    out = bytearray(struct.pack(">ih", corr, 0))
    out += put_uvarint(len(apis) + 1) if flexible else struct.pack(">i", len(apis))
    for key in sorted(apis):
        out += struct.pack(">hhh", key, *apis[key])
        if flexible:
            out += b"\x00"
    return bytes(out + rest)


def request_body(frame):
    """The body of a v1-header request (api key, version, correlation id, client id)."""
    n = struct.unpack(">h", frame[8:10])[0]
    return frame[10 + max(n, 0):]


class Scram:
    def __init__(self, hash_fn):
        self.h = hash_fn
        self.step = 0

    def hmac(self, key, msg):
        return hmac.new(key, msg, self.h).digest()

    def next(self, message, user, password):
        """Returns (reply bytes, done, error message)."""
        text = message.decode()
        if self.step == 0:
            gs2, _, bare = text.split(",", 2)
            attrs = dict(kv.split("=", 1) for kv in bare.split(","))
            if gs2 not in ("n", "y") or attrs.get("n", "").replace("=3D", "=").replace("=2C", ",") != user:
                return None, False, "unknown user"
            self.client_first_bare = bare
            self.nonce = attrs["r"] + base64.b64encode(os.urandom(18)).decode()
            self.salt = os.urandom(16)
            self.server_first = f"r={self.nonce},s={base64.b64encode(self.salt).decode()},i={ITERATIONS}"
            self.step = 1
            return self.server_first.encode(), False, None
        without_proof, _, proof = text.rpartition(",p=")
        attrs = dict(kv.split("=", 1) for kv in without_proof.split(","))
        if attrs.get("r") != self.nonce:
            return None, False, "nonce mismatch"
        salted = hashlib.pbkdf2_hmac(self.h().name, password.encode(), self.salt, ITERATIONS)
        client_key = self.hmac(salted, b"Client Key")
        stored_key = self.h(client_key).digest()
        auth_message = f"{self.client_first_bare},{self.server_first},{without_proof}".encode()
        signature = self.hmac(stored_key, auth_message)
        sent = base64.b64decode(proof)
        recovered = bytes(a ^ b for a, b in zip(sent, signature))
        if len(sent) != len(signature) or not hmac.compare_digest(self.h(recovered).digest(), stored_key):
            return None, False, "invalid credentials"
        server_key = self.hmac(salted, b"Server Key")
        verifier = base64.b64encode(self.hmac(server_key, auth_message)).decode()
        return f"v={verifier}".encode(), True, None


def plain(message, user, password):
    parts = message.split(b"\x00")
    if len(parts) == 3 and parts[1].decode() == user and parts[2].decode() == password:
        return b"", True, None
    return None, False, "invalid credentials"


async def main():
    port, target, user, state["password"] = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
    state["user"] = user
    host, tport = target.rsplit(":", 1)
    ctx = None
    if len(sys.argv) > 6:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(sys.argv[5], sys.argv[6])

    def rotate():
        state["password"] += "-rotated"
        for w in list(state["connections"]):
            w.close()

    asyncio.get_running_loop().add_signal_handler(signal.SIGUSR1, rotate)

    async def authenticate(cr, cw):
        """Runs the SASL exchange; returns the upstream connection once authenticated."""
        up = None
        mechanism, one_step = None, None
        while True:
            frame = await read_frame(cr)
            key, version, corr = struct.unpack(">hhi", frame[:8])
            if key == API_VERSIONS:
                if up is None:
                    up = await asyncio.open_connection(host, int(tport))
                write_frame(up[1], frame)
                await up[1].drain()
                write_frame(cw, advertise_sasl(await read_frame(up[0]), version))
            elif key == SASL_HANDSHAKE and version == 1:
                name = request_body(frame)
                name = name[2:2 + struct.unpack(">h", name[:2])[0]].decode()
                ok = name in MECHANISMS
                body = struct.pack(">h", 0 if ok else UNSUPPORTED_SASL_MECHANISM)
                body += struct.pack(">i", len(MECHANISMS)) + b"".join(kstring(m) for m in MECHANISMS)
                write_frame(cw, struct.pack(">i", corr) + body)
                if not ok:
                    await cw.drain()
                    return None
                mechanism = Scram(MECHANISMS[name]) if MECHANISMS[name] else None
                one_step = {"PLAIN": plain, "OAUTHBEARER": oauthbearer}.get(name)
            elif key == SASL_AUTHENTICATE and version <= 1 and (mechanism or one_step):
                body = request_body(frame)
                token = body[4:4 + struct.unpack(">i", body[:4])[0]]
                password = state["password"]
                if one_step:
                    reply, done, error = one_step(token, user, password)
                else:
                    reply, done, error = mechanism.next(token, user, password)
                if error:
                    message = f"Authentication failed during authentication due to {error} with SASL mechanism"
                    out = struct.pack(">ih", corr, SASL_AUTHENTICATION_FAILED) + kstring(message) + kbytes(b"")
                else:
                    out = struct.pack(">ih", corr, 0) + kstring(None) + kbytes(reply)
                if version >= 1:
                    out += struct.pack(">q", 0)
                write_frame(cw, out)
                await cw.drain()
                if error:
                    return None
                if done:
                    return up or await asyncio.open_connection(host, int(tport))
            else:
                # Anything else before authentication: a broker closes the connection.
                return None
            await cw.drain()

    async def handle(cr, cw):
        state["connections"].add(cw)
        try:
            up = await authenticate(cr, cw)
            if up is not None:
                state["connections"].add(up[1])
                await asyncio.gather(pipe(cr, up[1]), pipe(up[0], cw))
        except (ConnectionError, ssl.SSLError, asyncio.IncompleteReadError, OSError, ValueError, IndexError):
            pass
        finally:
            cw.close()
            state["connections"].discard(cw)

    server = await asyncio.start_server(handle, "127.0.0.1", port, ssl=ctx)
    if os.environ.get("OIDC_PORT"):
        await asyncio.start_server(token_endpoint, "127.0.0.1", int(os.environ["OIDC_PORT"]))
    print("ready", flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main())
