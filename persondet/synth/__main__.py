"""``python -m persondet.synth``: the ``persondet-demo-data`` command."""

from persondet.synth.tree import cli

raise SystemExit(cli())
