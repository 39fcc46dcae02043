"""Generated stubs of the ringserve.v1 protocol (see inference.proto)."""
