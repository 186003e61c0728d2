"""Old import path of the Azure BusAdmin adapter: shared.bus.azure.AzureServiceBus is both Bus and
BusAdmin, over one client."""
from shared.bus.azure import AzureServiceBus

AzureQueueOps = AzureServiceBus

__all__ = ["AzureQueueOps", "AzureServiceBus"]
