"""Trained weights shipped with ptolemy-leginon (installed as ``ptolemy_core.weights``)."""
