"""Echo server on python's `websockets` (Debian's python3-websockets), for the client
interop tests. Prints the port on stdout once listening. `--deflate` turns on
permessage-deflate (RFC 7692). A text message "close-me" makes the server close
with 4001 "as asked"."""
import asyncio
import sys

import websockets


async def echo(websocket, *_path):
    async for message in websocket:
        if message == "close-me":
            await websocket.close(4001, "as asked")
            return
        await websocket.send(message)


async def main():
    compression = "deflate" if "--deflate" in sys.argv else None
    async with websockets.serve(echo, "127.0.0.1", 0, compression=compression, max_size=None, ping_interval=None) as server:
        port = server.sockets[0].getsockname()[1]
        print(port, flush=True)
        await asyncio.Future()


asyncio.run(main())
