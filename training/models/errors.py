"""The error a model of the library raises for bad input."""


class ModelInputError(ValueError):
    """Bad input to a model (shape, values, arguments): one line naming the argument."""
