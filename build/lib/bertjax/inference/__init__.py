"""Dynamic inference runtimes: models whose compute depends on the input."""
