"""evaluate module for the harness metric `distinct_2` (see harness/evaluate_modules/template.py)."""

from harness.evaluate_modules.template import module_class

Distinct2 = module_class("distinct_2")
