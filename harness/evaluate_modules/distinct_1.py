"""evaluate module for the harness metric `distinct_1` (see harness/evaluate_modules/template.py)."""

from harness.evaluate_modules.template import module_class

Distinct1 = module_class("distinct_1")
