"""Knowledge distillation losses as methods (logit KD so far)."""

from methods.distill.logits import LogitDistillation, soft_cross_entropy

__all__ = ["LogitDistillation", "soft_cross_entropy"]
