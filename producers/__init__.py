"""Producer side of cce-sync: validate campaign documents, store them and enqueue their work.

Python callers start a campaign with ``producers.submit(document)`` and follow it with
``producers.EventReader``; other systems use the Redis stream intake (`producers.intake`).
"""

from producers.submit import SubmitResult, submit
from worker.events import Event, EventReader

__all__ = ["Event", "EventReader", "SubmitResult", "submit"]
