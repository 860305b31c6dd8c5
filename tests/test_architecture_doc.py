"""docs/architecture.md's Python examples run, in order, as one script: a task, a metric, a
filter and a backend added the documented way, then evaluated together."""

import os
import re
import subprocess
import sys

from tests.conftest import REPO


def test_architecture_examples_run(tmp_path):
    text = (REPO / "docs" / "architecture.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```python\n(.*?)```", text, re.S)
    assert len(blocks) >= 5  # task, metric, filter, backend, run it all
    script = tmp_path / "examples.py"
    script.write_text("\n\n".join(blocks), encoding="utf-8")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True,
                          timeout=1200, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "capitals 2 documents" in done.stdout
    assert "capitals exact_match first-word 1.0" in done.stdout
