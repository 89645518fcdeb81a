"""MLflow entry point `evaluate` (not implemented yet)."""

import sys

sys.exit("persondet: error: the 'evaluate' entry point is not implemented yet")
