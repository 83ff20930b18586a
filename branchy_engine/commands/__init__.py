"""The commands: `branchy` (cli.py) and the jobs it runs end to end (demo, pipeline, reproduce)."""
