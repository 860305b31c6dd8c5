"""evaluate module for the harness metric `exact_match` (see harness/evaluate_modules/template.py)."""

from harness.evaluate_modules.template import module_class

ExactMatch = module_class("exact_match")
