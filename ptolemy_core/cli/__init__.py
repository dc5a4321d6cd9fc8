"""The ``ptolemy`` command: a thin shell over :mod:`ptolemy_core` (the only printing layer)."""
