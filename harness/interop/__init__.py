"""Other tools' results formats: export our runs to them, import theirs into our reporter.

- harness.interop.view: the one place that reads our results files (everything else uses its
  dataclasses, so a change of the results model touches only that module).
- harness.interop.lmeval_export / lmeval_import: lm-evaluation-harness's results JSON and
  samples JSONL (lm_eval/result_schema.py, lm_eval/loggers/evaluation_tracker.py).
"""
