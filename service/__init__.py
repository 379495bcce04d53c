"""mark-notify: the shared core (config, SQL, identity, the app) and the capabilities around it."""
