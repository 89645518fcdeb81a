"""MLflow entry point `main` (not implemented yet)."""

import sys

sys.exit("persondet: error: the 'main' entry point is not implemented yet")
