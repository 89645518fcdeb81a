"""MLflow entry point `report` (not implemented yet)."""

import sys

sys.exit("persondet: error: the 'report' entry point is not implemented yet")
