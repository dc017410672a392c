"""Task-agnostic (general) distillation on unlabeled text, and AutoTinyBERT's supernet."""
