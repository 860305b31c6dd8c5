"""evaluate module for the harness metric `chrf` (see harness/evaluate_modules/template.py)."""

from harness.evaluate_modules.template import module_class

Chrf = module_class("chrf")
