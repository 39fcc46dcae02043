"""Membership sources: where the router learns which nodes exist."""
