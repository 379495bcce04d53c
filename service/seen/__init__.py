"""Seen marks: POST /v1/seen in, remembered marks and their outbox rows out."""
