"""mark-notify: the API and the domain (config, SQL, store)."""
