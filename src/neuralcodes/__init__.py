"""neuralcodes: content-based image retrieval with learned CNN representations."""

__version__ = "0.1.0"
