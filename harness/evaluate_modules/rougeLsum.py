"""evaluate module for the harness metric `rougeLsum` (see harness/evaluate_modules/template.py)."""

from harness.evaluate_modules.template import module_class

RougeLsum = module_class("rougeLsum")
