"""The web admin panel at /admin: managers' mailings and schedules, operators' tools."""
