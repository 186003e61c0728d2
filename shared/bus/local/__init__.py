"""The local queue engine (PostgreSQL-backed Service Bus semantics), by role.

sql.py (statements), engine.py (LocalQueueEngine: send, receive, settle, peek, counts),
listener.py (LISTEN/NOTIFY wake-ups), admin.py (LocalBusAdmin: the BusAdmin port for operators).
"""
from shared.bus.local.admin import LocalBusAdmin
from shared.bus.local.engine import LocalQueueEngine, LockLostError, ReceivedMessage, UnknownQueueError
from shared.bus.local.listener import channel_name

__all__ = ["LocalBusAdmin", "LocalQueueEngine", "LockLostError", "ReceivedMessage", "UnknownQueueError",
           "channel_name"]
