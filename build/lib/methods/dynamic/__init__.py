"""Dynamic inference: methods whose compute depends on the input (early exit, token reduction)."""
