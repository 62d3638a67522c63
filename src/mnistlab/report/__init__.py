"""What a sweep shows: its job folders read as data, summary.csv/.md, report.html, the sweep
callback.
May import sweep, run (its scalars) and below; never cli."""
