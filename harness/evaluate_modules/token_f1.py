"""evaluate module for the harness metric `token_f1` (see harness/evaluate_modules/template.py)."""

from harness.evaluate_modules.template import module_class

TokenF1 = module_class("token_f1")
