"""Every test run keeps modelguard's state directory to itself (never the user's own)."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile

os.environ["MODELGUARD_STATE_DIR"] = _STATE_DIR = tempfile.mkdtemp(prefix="modelguard-test-state-")
atexit.register(shutil.rmtree, _STATE_DIR, True)
