"""Old import path of the Azure Service Bus adapter (now shared.bus.azure)."""
from shared.bus.azure import AzureServiceBus, AzureServiceBusError, to_service_bus_message

__all__ = ["AzureServiceBus", "AzureServiceBusError", "to_service_bus_message"]
