"""testcontainers-python's HTTP wait strategy on the slow-start sample: prints the latency
from the moment the server could first answer 200 (from its log) to start() returning.

    TESTCONTAINERS_RYUK_DISABLED=true python benchmarks/readiness_testcontainers.py IMAGE
"""

from __future__ import annotations

import random
import re
import sys
import time
from datetime import datetime

from testcontainers.core.container import DockerContainer
from testcontainers.core.wait_strategies import HttpWaitStrategy

READY = re.compile(rb"can answer 200 from (\S+)")


def main(image: str) -> None:
    port = random.randint(20000, 59999)
    container = (
        DockerContainer(image)
        .with_env("PSC_MODEL_PORT", str(port))
        .with_exposed_ports(port)
        .waiting_for(HttpWaitStrategy(port, "/status").for_status_code(200).with_startup_timeout(60))
    )
    container.start()
    declared_ready = time.time()
    try:
        stdout, _ = container.get_logs()
        match = READY.search(stdout)
        assert match, stdout[-500:]
        ready_at = datetime.fromisoformat(match[1].decode()).timestamp()
        print(f"{declared_ready - ready_at:.4f}")
    finally:
        container.stop()


if __name__ == "__main__":
    main(sys.argv[1])
