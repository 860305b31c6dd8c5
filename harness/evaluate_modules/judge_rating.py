"""evaluate module for the harness metric `judge_rating` (see harness/evaluate_modules/template.py)."""

from harness.evaluate_modules.template import module_class

JudgeRating = module_class("judge_rating")
