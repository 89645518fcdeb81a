"""MLflow entry point `train` (not implemented yet)."""

import sys

sys.exit("persondet: error: the 'train' entry point is not implemented yet")
