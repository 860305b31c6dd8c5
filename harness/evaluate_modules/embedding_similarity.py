"""evaluate module for the harness metric `embedding_similarity` (see harness/evaluate_modules/template.py)."""

from harness.evaluate_modules.template import module_class

EmbeddingSimilarity = module_class("embedding_similarity")
