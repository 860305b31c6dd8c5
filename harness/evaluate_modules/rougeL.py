"""evaluate module for the harness metric `rougeL` (see harness/evaluate_modules/template.py)."""

from harness.evaluate_modules.template import module_class

RougeL = module_class("rougeL")
