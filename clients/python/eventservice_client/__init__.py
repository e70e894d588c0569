"""eventservice-client: exactly-once uploads to eventservice from Python (a relay, a script, an import).

The server stores a batch once per batch_id; this package keeps every batch, with its
id, until the server ACKs it, and resends it through reconnects and restarts.
"""

from eventservice_client.events import EventError, Limits
from eventservice_client.link import UploadError
from eventservice_client.outbox import QueueFull
from eventservice_client.uploader import Uploader

__all__ = ["EventError", "Limits", "QueueFull", "UploadError", "Uploader"]
