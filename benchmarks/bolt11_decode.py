"""What reading a BOLT11 invoice costs: pylon's reader against PyPI ``bolt11`` (one JSON line).

A paying customer reads every bill on its critical path, on its Nostr loop thread; the
provider and the development wallet read invoices too. Both decoders read the same invoices
(one issued by the development wallet's issuer, as pylon providers bill, and the longest
example of the BOLT #11 specification), interleaved round by round, and must agree on every
field the payer checks. Target: the library's median / the reader's median >= 5.

    .venv/bin/python benchmarks/bolt11_decode.py [--rounds 200]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import emit, machine, median, rnd, rotated

# The BOLT #11 example with route hints and a fallback address (its longest, 499 characters).
SPEC_EXAMPLE = (
    "lnbc20m1pvjluezsp5zyg3zyg3zyg3zyg3zyg3zyg3zyg3zyg3zyg3zyg3zyg3zyg3zygspp5qqqsyqcyq5rqwzqfqqqsyqcyq5rqwzqfqqqsyq"
    "cyq5rqwzqfqypqhp58yjmdan79s6qqdhdzgynm4zwqd5d7xmw5fk98klysy043l2ahrqsfpp3qjmp7lwpagxun9pygexvgpjdc4jdj85fr9yq"
    "20q82gphp2nflc7jtzrcazrra7wwgzxqc8u7754cdlpfrmccae92qgzqvzq2ps8pqqqqqqpqqqqq9qqqvpeuqafqxu92d8lr6fvg0r5gv0heeeq"
    "gcrqlnm6jhphu9y00rrhy4grqszsvpcgpy9qqqqqqgqqqqq7qqzq9qrsgqdfjcdk6w3ak5pca9hwfwfh63zrrz06wwfya0ydlzpgzxkn5xagsq"
    "z7x9j4jwe7yj7vaf2k9lqsdk45kts2fd0fkr28am0u4w95tt2nsq76cqw0"
)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=200, help="timed reads of each invoice by each decoder")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import bolt11

    from dspy_pylon.pay.bolt11_reader import read_bolt11
    from dspy_pylon.pay.dev_wallet import issue_invoice

    ours = issue_invoice(os.urandom(32).hex(), 1_000, "pylon job " + "ab" * 32, 600)[0]
    invoices = {"pylon_bill": ours, "spec_route_hints": SPEC_EXAMPLE}
    readers = {"reader": read_bolt11, "bolt11": bolt11.decode}
    for text in invoices.values():  # same reading first (and both warmed up)
        mine, theirs = read_bolt11(text), bolt11.decode(text)
        same = (mine.payment_hash, mine.amount_msats, mine.timestamp, mine.payee) == (
            theirs.payment_hash,
            theirs.amount_msat,
            theirs.date,
            theirs.payee,
        )
        if not same:
            print("the reader and bolt11 disagree on an invoice", file=sys.stderr)
            return 1
    times: dict[str, dict[str, list[float]]] = {name: {r: [] for r in readers} for name in invoices}
    for i in range(args.rounds):
        for name, text in invoices.items():
            for reader in rotated(list(readers), i):
                start = time.perf_counter()
                readers[reader](text)
                times[name][reader].append((time.perf_counter() - start) * 1000)
    median_ms = {name: {r: rnd(median(v), 4) for r, v in by.items()} for name, by in times.items()}
    ratio = {name: rnd(by["bolt11"] / by["reader"], 2) for name, by in median_ms.items()}
    emit(
        {
            "benchmark": "bolt11_decode",
            "rounds": args.rounds,
            "median_ms": median_ms,
            "ratio_bolt11_over_reader": ratio,
            "targets": {"ratio>=": 5.0},
            "met": {name: value >= 5.0 for name, value in ratio.items()},
            "machine": machine(),
        }
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
