"""The serving runtime node and router share: how a process serves item streams, reports and stops.

``streams`` is the stream engine (read items, answer each once, in completion
order, drain); ``telemetry`` sets up metrics and traces; ``process`` fills flags
from the environment and stops on a signal. Imports the contract, never the
node, the router or the client.
"""
