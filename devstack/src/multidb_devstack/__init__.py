"""The development stack behind ``make run``: an embedded PostgreSQL and a supervisor.

A deployed role service or gateway never installs this package; it adds ``multidb up``
to the CLI and lets the other commands find the embedded server's databases.
"""
