"""Settings: schemas (types and ranges; the YAML files hold every default), target checks, what may
change.
May import names, files and private only: no torch, so --help answers quickly."""
