"""The engine: scheduler, limits, retries, events."""
