"""Leginon adapters: native target-finder nodes and drop-in scripts.

Imports ``leginon``/``pyami`` lazily so this package imports without Leginon.
"""
