#!/usr/bin/env python3
"""A TLS-terminating TCP proxy for the TLS tests (nisshi 0.6.0 cannot serve TLS itself).

    tls_proxy.py LISTEN_PORT TARGET_HOST:TARGET_PORT CERT KEY [CLIENT_CA]

Accepts TLS on 127.0.0.1:LISTEN_PORT with CERT/KEY and forwards the plaintext bytes to the
target. With CLIENT_CA, clients must present a certificate signed by it (mutual TLS). Prints
"ready" once listening. Standard library only.
"""
import asyncio
import ssl
import sys


async def pipe(reader, writer):
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, ssl.SSLError, asyncio.IncompleteReadError):
        pass
    finally:
        writer.close()


async def main():
    port, target, cert, key = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
    host, tport = target.rsplit(":", 1)
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert, key)
    if len(sys.argv) > 5:
        ctx.load_verify_locations(sys.argv[5])
        ctx.verify_mode = ssl.CERT_REQUIRED

    async def handle(client_reader, client_writer):
        try:
            up_reader, up_writer = await asyncio.open_connection(host, int(tport))
        except OSError:
            client_writer.close()
            return
        await asyncio.gather(pipe(client_reader, up_writer), pipe(up_reader, client_writer))

    server = await asyncio.start_server(handle, "127.0.0.1", port, ssl=ctx)
    print("ready", flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main())
