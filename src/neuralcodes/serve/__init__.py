"""The web page and JSON API of an index: ``neuralcodes serve INDEX`` (FastAPI under uvicorn).

:func:`~neuralcodes.serve.app.create_app` builds the app for an open :class:`~neuralcodes.index.Index`
from the routers of :mod:`~neuralcodes.serve.routes` (page, search, images).
"""

from neuralcodes.serve.app import create_app

__all__ = ["create_app"]
