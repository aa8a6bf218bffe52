"""A bare aiosmtpd sink: accepts everything, answers 250, keeps nothing. The ceiling the gateway is
compared with (`python -m bench.sink --port N`)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal

from aiosmtpd.smtp import SMTP


class SinkHandler:
    async def handle_DATA(self, server: SMTP, session: object, envelope: object) -> str:
        return "250 2.0.0 OK"


async def serve(port: int, max_bytes: int) -> None:
    logging.getLogger("mail.log").setLevel(logging.WARNING)
    loop = asyncio.get_running_loop()
    handler = SinkHandler()

    def make() -> SMTP:
        return SMTP(
            handler,
            hostname="bench.sink.test",  # otherwise a blocking getfqdn() per connection
            data_size_limit=max_bytes,
            enable_SMTPUTF8=True,
            decode_data=False,
            ident="bench-sink",
        )

    server = await loop.create_server(make, "127.0.0.1", port)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    async with server:
        await stop.wait()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--max-bytes", type=int, default=64 * 1024 * 1024)
    args = parser.parse_args()
    asyncio.run(serve(args.port, args.max_bytes))


if __name__ == "__main__":
    main()
