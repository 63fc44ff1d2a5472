"""Settings shared by every test directory."""

import os

from hypothesis import settings

# CI runs every property-based suite (Hypothesis, Schemathesis) with its fixed budget
# of examples and a fixed seed, so a run is reproducible; elsewhere each run explores
# new examples.
settings.register_profile("ci", derandomize=True, print_blob=True)
if os.environ.get("CI"):
    settings.load_profile("ci")
