"""evaluate module for the harness metric `rouge1` (see harness/evaluate_modules/template.py)."""

from harness.evaluate_modules.template import module_class

Rouge1 = module_class("rouge1")
