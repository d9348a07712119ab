"""Speed, side by side with the reference implementations: ``python -m benchmarks`` (see __main__.py).

Not part of the ``neuralcodes`` package: nothing in src/ imports from here.
"""
