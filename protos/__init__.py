"""The wire contract every side of ringserve imports: stubs, codec, fingerprint.

Nothing here imports torch, so a caller can install the client alone.
"""
