"""The run store and the journal that batches writes to it."""
