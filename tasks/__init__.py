"""Task, suite and class-schema YAMLs, shipped as package data (read through importlib.resources)."""
