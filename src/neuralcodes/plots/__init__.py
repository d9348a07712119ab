"""Figures (PNG, matplotlib with the non-interactive Agg backend)."""

import matplotlib

matplotlib.use("Agg")
