"""The one exception this package raises for a problem with its inputs or its output."""


class BundleError(Exception):
    """A bundle cannot be built or does not validate; the message names the problem."""
