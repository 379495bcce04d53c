"""Notifications: events in, notifications per user out through channels."""
