"""Time (wall and CPU) and peak memory of parse_results_document on large generated documents.

    .venv/bin/python -m bench.parse_large_document                # 50,000 and 100,000 results
    .venv/bin/python -m bench.parse_large_document 20000 --gzip   # read through gzip.GzipFile
    .venv/bin/python -m bench.parse_large_document 50000 --reference   # xml_reader alone (no plain_reader)

Each size is parsed in a fresh child process, so the peak RSS reported (resource.getrusage) belongs to
parsing alone, not to generating the document.
"""

from __future__ import annotations

import argparse
import gzip
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def parse_file(path: Path, compressed: bool, reference: bool) -> dict[str, object]:
    from shared.domain import results_document, xml_reader
    from shared.domain.results_document import parse_results_document

    if reference:  # every result through lxml elements, as before plain_reader
        results_document.read_plain_results = xml_reader.read_results

    before = _peak_rss_mb()
    started, cpu_started = time.perf_counter(), time.process_time()
    with gzip.open(path, "rb") if compressed else open(path, "rb") as stream:
        parsed = parse_results_document(stream)
    seconds, cpu_seconds = time.perf_counter() - started, time.process_time() - cpu_started
    return {
        "results": len(parsed.results),
        "valid": parsed.valid,
        "tests": len(parsed.test_ids),
        "seconds": round(seconds, 2),
        "cpu_seconds": round(cpu_seconds, 2),
        "results_per_s": round(len(parsed.results) / seconds),
        "rss_before_mb": round(before, 1),
        "peak_rss_mb": round(_peak_rss_mb(), 1),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("sizes", nargs="*", type=int, default=[50_000, 100_000])
    ap.add_argument("--gzip", action="store_true", help="store gzip-compressed and parse via gzip.GzipFile")
    ap.add_argument("--reference", action="store_true", help="read with xml_reader alone, for comparison")
    ap.add_argument("--child", nargs=3, metavar=("PATH", "COMPRESSED", "REFERENCE"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(parse_file(Path(args.child[0]), args.child[1] == "1", args.child[2] == "1")))
        return

    from tests.documents import write_large_document

    with tempfile.TemporaryDirectory() as tmp:
        for n in args.sizes:
            path = Path(tmp) / f"results-{n}.xml{'.gz' if args.gzip else ''}"
            size = write_large_document(path, n, compress=args.gzip)
            out = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "bench.parse_large_document",
                    "--child",
                    str(path),
                    str(int(args.gzip)),
                    str(int(args.reference)),
                ],
                cwd=ROOT,
                check=True,
                capture_output=True,
                text=True,
            )
            m = json.loads(out.stdout)
            on_disk = path.stat().st_size / 1e6
            print(
                f"{n:>7} results  {size / 1e6:6.1f} MB xml ({on_disk:.1f} MB stored{', gzip' if args.gzip else ''})"
                f"  valid={m['valid']} tests={m['tests']}  {m['seconds']:6.2f} s ({m['cpu_seconds']:.2f} CPU-s)"
                f"  {m['results_per_s']:>7} results/s"
                f"  peak RSS {m['peak_rss_mb']:.0f} MB (at start {m['rss_before_mb']:.0f} MB)"
            )


if __name__ == "__main__":
    main()
