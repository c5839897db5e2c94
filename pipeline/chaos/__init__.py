"""`pipeline chaos`: fault injection, hostile input and the verdict (issue 22)."""
