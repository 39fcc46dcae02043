"""What every ringserve process does the same way: flags with environment fallbacks, and a stop on signal.

Node and router each fill their own config dataclasses from these flags in one
place; this only supplies the mechanics they share.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
from collections.abc import Awaitable, Callable, Mapping

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def env_defaults(parser: argparse.ArgumentParser, environ: Mapping[str, str], prefix: str) -> None:
    """Let ``<prefix><FLAG>`` in the environment set each flag's default; a flag given on the command line wins."""
    for action in parser._actions:
        if not action.option_strings or action.dest == "help":
            continue
        value = environ.get(prefix + action.dest.upper())
        if value is None:
            continue
        if isinstance(action, argparse._AppendAction):
            action.default = [v for v in value.split(",") if v]
        else:
            action.default = action.type(value) if action.type else value


def setup_logging(level: str) -> None:
    logging.basicConfig(level=level.upper(), format=LOG_FORMAT)


async def run_until_signal(start: Callable[[], Awaitable[object]], stop: Callable[[], Awaitable[None]]) -> None:
    """Start, wait for SIGTERM or SIGINT, then stop (drain) gracefully."""
    await start()
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    await stopping.wait()
    await stop()
