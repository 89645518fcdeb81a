"""MLflow entry point `promote` (not implemented yet)."""

import sys

sys.exit("persondet: error: the 'promote' entry point is not implemented yet")
