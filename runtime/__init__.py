"""The serving runtime node and router share: how a process serves item streams, reports and stops.

``edge`` is the Inference service's four item streams, written once for node and
router; ``streams`` is the stream engine (read items, answer each once, in
completion order, drain); ``singleflight`` runs one execution per key at a time;
``telemetry`` sets up metrics and traces; ``process`` fills flags from the
environment, stops on a signal and gives memory back; ``redisconn`` makes a Redis
or Redis Cluster client from a URL. Imports the contract, never the node, the
router or the client.
"""
