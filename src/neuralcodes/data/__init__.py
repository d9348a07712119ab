"""Data: sources -> cache -> splits -> batches."""
