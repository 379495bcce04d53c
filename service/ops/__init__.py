"""What an operator does, for the admin panel and the CLIs alike: redeliver, controls,
audit, the ops commands' database, the SQL shell; and the one convention of the bin/
commands (cli.py), with bin/redeliver's and bin/apikey's."""
