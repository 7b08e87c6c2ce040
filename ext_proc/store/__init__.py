"""Durable decisions: the operators' forced states and canary orders, kept where a restart
(even ``kill -9``) finds them.

Behind one small interface, ``StateStore``, so that the shared backend for a fleet of replicas
(Redis) is another implementation of it. A store is never on the request path: the server
reads and writes it in a worker thread, and the decision core only ever sees what was read.
"""

from ext_proc.store.base import CANARY_KEY, Order, StateStore, StoreError, TierKey
from ext_proc.store.directory import DirectoryStore, default_state_dir

__all__ = ["CANARY_KEY", "DirectoryStore", "Order", "StateStore", "StoreError", "TierKey", "default_state_dir"]
