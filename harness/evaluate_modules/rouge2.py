"""evaluate module for the harness metric `rouge2` (see harness/evaluate_modules/template.py)."""

from harness.evaluate_modules.template import module_class

Rouge2 = module_class("rouge2")
