"""Imported first by the preloading server (``preload``), and only there: it leaves the starter's process group
and ignores stop signals.

A terminal's Ctrl-C or hang-up, or a signal sent to the starter's group, is meant for the starter, which
stops its nodes with a drain; were it to end the server too, every child would get its parent-death SIGKILL
first. The server needs no signal to end: it ends when the starter does (its pipe closes). Each child
restores the default handlers (``preload._run``).
"""

import os
import signal

os.setpgid(0, 0)
for _sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
    signal.signal(_sig, signal.SIG_IGN)
