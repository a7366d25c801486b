"""Run an `lswh` command to completion as a user would, with the pipeline's environment."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from tests.support.procs import ROOT


def run_lswh(env: dict[str, str], *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    exe = shutil.which("lswh", path=str(Path(sys.executable).parent))
    command = [exe, *args] if exe else [sys.executable, "-m", "lswh.cli", *args]
    return subprocess.run(command, env={**os.environ, **env}, cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout, check=False)
