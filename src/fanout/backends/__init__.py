"""Backends that execute provider calls away from the engine's process (`engine/backend.py`
is the seam). `ray`: a Ray cluster; imported only when asked for, so the base install never
needs Ray."""
