"""`pipeline bench`: every stage against its bare baseline, in one run."""
