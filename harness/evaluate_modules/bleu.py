"""evaluate module for the harness metric `bleu` (see harness/evaluate_modules/template.py)."""

from harness.evaluate_modules.template import module_class

Bleu = module_class("bleu")
