"""mark-notify dispatchers: claim outbox rows and deliver them."""
