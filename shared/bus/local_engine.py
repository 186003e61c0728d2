"""Old import path of the local queue engine, kept for callers not yet moved to shared.bus.local."""
from shared.bus.local.engine import LocalQueueEngine, LockLostError, ReceivedMessage, UnknownQueueError
from shared.bus.local.listener import channel_name

__all__ = ["LocalQueueEngine", "LockLostError", "ReceivedMessage", "UnknownQueueError", "channel_name"]
