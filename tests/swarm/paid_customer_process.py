"""A customer process for the crash-safety test: makes paid calls until ``PYLON_TEST_CALLS``
have completed, appending one line per completed call to ``PYLON_TEST_PROGRESS``.

Run as ``python -m tests.swarm.paid_customer_process`` with ``PYLON_HOME``, ``PYLON_NWC_URI``,
``PYLON_TEST_RELAY``, ``PYLON_TEST_PROVIDER`` and ``PYLON_TEST_KEY`` set. The test kills it
with SIGKILL at random moments and starts it again.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"

import dspy_pylon as pylon


def main() -> int:
    progress = Path(os.environ["PYLON_TEST_PROGRESS"])
    target = int(os.environ["PYLON_TEST_CALLS"])
    config = pylon.PylonConfig(
        venue=pylon.Swarm(
            relays=(os.environ["PYLON_TEST_RELAY"],),
            providers=(os.environ["PYLON_TEST_PROVIDER"],),
            bid_msats=5_000,
            auto_pay=True,
        ),
        timeout=10,
    )
    lm = pylon.PylonLM.swarm(os.environ["PYLON_TEST_KEY"], config, cache=False, num_retries=0, max_tokens=4)
    done = len(progress.read_text().splitlines()) if progress.exists() else 0
    while done < target:
        try:
            lm(f"question {done}")
        except Exception as exc:  # a failed call is retried; the test checks what was paid
            print(f"call {done} failed: {exc}", file=sys.stderr, flush=True)
            continue
        with progress.open("a") as handle:
            handle.write(f"{done}\n")
            handle.flush()
            os.fsync(handle.fileno())
        done += 1
        time.sleep(float(os.environ.get("PYLON_TEST_PAUSE", "0")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
