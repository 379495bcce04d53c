"""What an operator does, for the admin panel and the CLIs alike: redeliver, controls,
audit, the ops commands' database, the SQL shell."""
