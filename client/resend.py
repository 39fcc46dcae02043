"""What a call sends again, and until when: one engine for the item streams and the unary calls.

A call has one deadline, set when it starts, for all of its tries. What the server could not
take is sent again after a back-off (``ClientConfig.backoff``) unless that back-off would pass
the deadline: items answered UNAVAILABLE one by one, and every item still unanswered when a
stream ends with a status that is no answer about them (``errors.may_resend``). Any other end
of a stream is the answer for every item it left unanswered.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import grpc

from ringserve.client import errors
from ringserve.client.config import ClientConfig


async def tries(config: ClientConfig, timeout_s: float | None) -> AsyncIterator[float | None]:
    """The time left for each try of one call (None: no deadline), pausing before each re-send.

    Yields at most ``config.retries + 1`` times, and never after a back-off that would end past the deadline.
    """
    loop = asyncio.get_running_loop()
    deadline = None if timeout_s is None else loop.time() + timeout_s
    for attempt in range(config.retries + 1):
        if attempt:
            delay = config.backoff(attempt)
            if deadline is not None and loop.time() + delay >= deadline:
                return
            await asyncio.sleep(delay)
        yield None if deadline is None else max(0.001, deadline - loop.time())


@dataclass(frozen=True)
class Outcome:
    """How the tries of an item call ended, for the items still pending."""

    # A stream's end that is the answer for every item it left (its status is theirs), or None.
    refused: grpc.aio.AioRpcError | None
    # The last reason the server gave for not taking them ("" if none).
    reason: str
    tries: int

    def error(self, request_id: str, reason: str | None = None) -> errors.RingserveError:
        """The error for an item still pending: the refusal's, or Unavailable with its own reason if known."""
        if self.refused is not None:
            return errors.from_status(self.refused.code(), self.refused.details() or "", request_id)
        why = reason or self.reason or "the server could not take it"
        return errors.Unavailable(f"not taken in {self.tries} tries within the call's time: {why}", request_id)


async def items(config: ClientConfig, timeout_s: float | None, pending: dict[str, Any],
                stream: Callable[[list[Any], float | None], Awaitable[None]]) -> Outcome:
    """Send ``pending``'s items until none is left, the tries run out or a stream is refused outright.

    Args:
        pending: request id -> request; ``stream`` removes each item it got a final answer for.
        stream: one stream over the given items with the given time left.

    Returns:
        How it ended, for the items still in ``pending``.
    """
    reason, count = "", 0
    async for timeout in tries(config, timeout_s):
        count += 1
        try:
            await stream(list(pending.values()), timeout)
        except grpc.aio.AioRpcError as exc:
            if not errors.may_resend(exc):
                return Outcome(exc, "", count)
            reason = exc.details() or "the server was unavailable"
        if not pending:
            break
    return Outcome(None, reason, count)


async def unary(config: ClientConfig, method: Callable[..., Awaitable[Any]], request: Any,
                timeout_s: float | None) -> Any:
    """One unary call, sent again while the server could not take it (a router restarting, a view loading).

    Raises:
        RingserveError: the typed error of the last answer (``Unavailable`` when every try was refused).
    """
    last: grpc.aio.AioRpcError | None = None
    async for timeout in tries(config, timeout_s):
        try:
            return await method(request, timeout=timeout)
        except grpc.aio.AioRpcError as exc:
            if not errors.may_resend(exc):
                raise errors.from_status(exc.code(), exc.details() or "") from exc
            last = exc
    assert last is not None  # the first try always happens
    raise errors.from_status(last.code(), last.details() or "") from last
