"""The one exception type `decay` raises for bad input."""


class DecayError(ValueError):
    """Raised for bad input: an unknown backend, a bad hyperparameter, mismatched tensors.

    A subclass of ``ValueError`` so that code catching ``ValueError`` keeps working.
    Every message names what was wrong, the value received and how to fix it.
    Nothing is modified when it is raised.
    """
