"""What the benchmarks say about the machine they ran on."""

import os
import platform
from pathlib import Path


def cpu() -> str:
    """The processor's model name and how many cores this process sees."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return f"{line.split(':', 1)[1].strip()} x{os.cpu_count() or 1}"
    except OSError:
        pass
    return platform.processor() or platform.machine()
