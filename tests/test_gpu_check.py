"""benchmarks/gpu_check.py without a GPU: one line saying it needs one, exit status 2.

Its `--smoke` run (every section on the CPU) takes about a minute here, too long for the suite;
run it by hand after changing the script."""

import os
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).parents[1] / "benchmarks" / "gpu_check.py"


def test_without_cuda_it_exits_2_with_one_line():
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    proc = subprocess.run([sys.executable, str(SCRIPT)], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    lines = (proc.stdout + proc.stderr).strip().splitlines()
    assert len(lines) == 1 and "needs a CUDA GPU" in lines[0]
