"""A whole ringserve cluster on one machine: Redis, nodes and a router as real processes.

``processes`` starts and stops each child (free loopback ports, its own session,
always stopped); ``cluster`` operates them the way Kubernetes operates a
StatefulSet (roll, scale, restart); ``load`` keeps callers busy and counts every
item's fate; ``up`` is the ``ringserve-up`` command, with the sample photos in
``samples/``. Used by the demo, the tests and the benchmarks; a deployed node or
router never imports it.
"""
