"""What a run is made of: models, optimizers, schedules, precision, device, distributed ranks.
May import config, names and private; parts and data do not import each other."""
