"""evaluate module for the harness metric `chrf_pp` (see harness/evaluate_modules/template.py)."""

from harness.evaluate_modules.template import module_class

ChrfPp = module_class("chrf_pp")
