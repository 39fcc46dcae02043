"""Trace context on the wire: W3C traceparent in a call's metadata, or in an item's ``trace_context`` map.

The client injects the caller's context when OpenTelemetry is installed; the router
carries it per item on its shared streams; the node continues the trace. Imports are
lazy, so the bare client needs no OpenTelemetry at all.
"""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping
from typing import Any


def inject(carrier: MutableMapping[str, str]) -> None:
    """Write the current trace context (W3C traceparent) into ``carrier``, if OpenTelemetry is present."""
    try:
        from opentelemetry import propagate
    except ImportError:
        return
    propagate.inject(carrier)


def extract_metadata(context: Any) -> Any:
    """The trace context a caller sent in a call's gRPC metadata (W3C traceparent), or None."""
    metadata = {k: v for k, v in (context.invocation_metadata() or ()) if isinstance(v, str)}
    if "traceparent" not in metadata:
        return None
    return extract(metadata)


def extract(carrier: Mapping[str, str]) -> Any:
    """The trace context in ``carrier`` (an item's trace_context map), for use as a span's parent."""
    from opentelemetry import propagate

    return propagate.extract(carrier)
