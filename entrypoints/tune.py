"""MLflow entry point `tune` (not implemented yet)."""

import sys

sys.exit("persondet: error: the 'tune' entry point is not implemented yet")
