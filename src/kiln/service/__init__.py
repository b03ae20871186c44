"""The service layer: one module per task type, a dispatcher, and the shared services."""

from kiln.service.dispatcher import Dispatcher, Reply
from kiln.service.services import Services

__all__ = ["Dispatcher", "Reply", "Services"]
