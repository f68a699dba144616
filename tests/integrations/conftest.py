"""Hypothesis keeps its example database and caches outside the repository (no .hypothesis/)."""

import tempfile
from pathlib import Path

from hypothesis import configuration

configuration.set_hypothesis_home_dir(Path(tempfile.gettempdir()) / "caretext-hypothesis")
