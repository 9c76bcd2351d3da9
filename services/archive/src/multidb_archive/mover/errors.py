"""The mover's two refusals, each one line for the caller."""


class MoverError(Exception):
    """The request cannot run as asked (unknown model, no source database...): a 400."""


class MoverBusyError(Exception):
    """Another mover (a replica of the archive service, or the CLI) holds the lock: a 409."""
