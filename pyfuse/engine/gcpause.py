"""The cyclic garbage collector paused for a pass, shared by overlapping passes."""

from __future__ import annotations

import contextlib
import gc
import threading
from collections.abc import Iterator

__all__ = ["gc_paused"]


class _GcPause:
    lock = threading.Lock()
    pausers = 0  # passes running with the collector paused
    was_enabled = False


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector for the pass.

    The pass allocates O(F) small objects while the process holds a large graph;
    every generation-2 collection then walks the whole heap, which cost more than
    the pass itself on 10k+ node graphs. The pass makes almost no cyclic garbage:
    what it allocates is the output (modules, Parameters, nodes, code); the
    exceptions are one empty Graph a call (9 objects, replaced as the output is
    built) and, on the first pass with a backend config, the pattern compiler's
    recursive helpers (~230 objects). So when the collector is restored, the
    objects allocated meanwhile are handed to the oldest generation
    (``gc.freeze()`` then ``gc.unfreeze()``, two list splices) instead of being
    walked by the young collection that the next allocation would start
    (0.05-0.1 s at 35k nodes) and again by the middle one; full collections
    still see them. Skipped if the process has frozen objects of its
    own, which ``gc.unfreeze()`` would release. Passes in several threads share
    one pause: the first saves the collector's state, the last restores it.
    """
    state = _GcPause
    with state.lock:
        if state.pausers == 0:
            state.was_enabled = gc.isenabled()
            gc.disable()
        state.pausers += 1
    try:
        yield
    finally:
        with state.lock:
            state.pausers -= 1
            if state.pausers == 0 and state.was_enabled:
                if gc.get_freeze_count() == 0:
                    gc.freeze()
                    gc.unfreeze()
                gc.enable()
