"""evaluate module for the harness metric `ter` (see harness/evaluate_modules/template.py)."""

from harness.evaluate_modules.template import module_class

Ter = module_class("ter")
