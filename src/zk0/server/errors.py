"""The errors that stop a round: the run's (FederationError) or one attempt's (RoundFellShort)."""


class FederationError(RuntimeError):
    """The federation cannot go on (too few nodes, too few usable results)."""


class RoundFellShort(FederationError):
    """An attempt at a round closed with too few usable replies and round-retries allow another:
    the message is the one line saying why; the round loop runs the round again."""
