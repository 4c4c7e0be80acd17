"""Make Tune's global registry safe for several experiments started from one driver at once.

The sweep starts its graph's Tune experiments from threads of one driver; each `Tuner.fit()`
registers its trainable in Tune's process-wide `_Registry`, whose `register` and
`flush_values` iterate and clear one dict without a lock, so two experiments starting together
can fail with "dictionary changed size during iteration". One re-entrant lock around both
methods (installed once, idempotent) serialises those few microseconds and nothing else.
"""

from __future__ import annotations

import functools
import threading

_LOCK = threading.RLock()


def install() -> None:
    from ray.tune import registry

    cls = registry._Registry
    if getattr(cls, "_dfa_ray_locked", False):
        return
    for name in ("register", "flush_values", "unregister", "contains", "get"):
        original = getattr(cls, name)

        @functools.wraps(original)
        def locked(self, *args, __original=original, **kwargs):
            with _LOCK:
                return __original(self, *args, **kwargs)

        setattr(cls, name, locked)
    cls._dfa_ray_locked = True
