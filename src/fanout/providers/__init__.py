"""Providers: the protocol (`base`) and its implementations (`sim`, ...)."""
