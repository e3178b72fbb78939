"""Worker processes exit when the node that started them is gone.

`kill -9` of a node process alone (not its process group) would otherwise leave its
forkserver and idle workers running for good: nothing in multiprocessing ends them. The
forkserver preloads `forkserver_watch` (pool.py), whose import watches its parent, the
node; each worker calls `watch_parent()` from the pool initializer and watches its own
parent, the forkserver. The daemon never imports `forkserver_watch`: it must not end with
the process that started it (`shoal up --detach` returns and leaves it running). A watcher polls once a second and exits the process when its
parent changed (the orphan was re-parented).
"""
from __future__ import annotations

import os
import threading
import time

POLL_S = 1.0


def watch_parent() -> None:
    """Start a daemon thread that ends this process once its parent process is gone."""
    parent = os.getppid()

    def watch() -> None:
        while True:
            time.sleep(POLL_S)   # periodic check of the parent, not a wait for a state
            if os.getppid() != parent:
                os._exit(0)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()

