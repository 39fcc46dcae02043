"""Generated stubs of the ringserve.v1 protocol, from protos/ringserve/v1/*.proto (protos/generate.py)."""
