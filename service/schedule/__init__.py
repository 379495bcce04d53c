"""Scheduled work in SQL: digests, periodic events, retention, and the backend that runs them."""
