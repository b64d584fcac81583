"""A small thread-safe least-recently-used cache of expensive objects.

The process-wide caches of Keras bases and of exported-model runners use it: building
an entry (loading 15 million weights, exporting a model) happens once per key even when
threads ask for it at the same time.
"""

import threading
from collections import OrderedDict


class LRUCache:
    """At most ``max_entries`` objects, built on first request by ``build()``.

    ``get_or_build`` holds the lock while building, so two threads asking for the same
    missing key build it once.
    """

    def __init__(self, max_entries):
        self.max_entries = max_entries
        self._entries = OrderedDict()
        self._lock = threading.RLock()

    def get_or_build(self, key, build):
        with self._lock:
            try:
                value = self._entries[key]
            except KeyError:
                value = build()
                self._entries[key] = value
                while len(self._entries) > self.max_entries:
                    self._entries.popitem(last=False)
            self._entries.move_to_end(key)
            return value

    def clear(self):
        with self._lock:
            self._entries.clear()

    def __len__(self):
        return len(self._entries)

    def __contains__(self, key):
        return key in self._entries
