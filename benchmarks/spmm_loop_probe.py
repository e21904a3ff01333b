"""Cycles per entry of the sparse int8 kernels' inner loops, and what bounds them on this CPU.

    python benchmarks/spmm_loop_probe.py                  # K 768 and 3072, 20 / 77 entries a column
    python benchmarks/spmm_loop_probe.py --K 768 --entries 20 --rounds 30

The probe is benchmarks/spmm_loop_probe.c. Its loops are copies of the column-sum loops of
templates/kernels/sparse_gemm.h.j2 (avx512_vnni, 64-token panel): "quads" (1o4i: per entry a k
quad and its 4 weights; 4 zmm loads and 4 vpdpbusd) and "compact" (unstructured: per entry 4
nonzeros at any k; 4 byte-row loads, 8 unpacks, 4 vpdpbusd). Next to each, variants that leave
one part out or change it, so that the differences say which part costs what:

  compact_u64       the 4 uint16 k of an entry read by one 64-bit load (kernel: 4 loads)
  compact_no_index  4 consecutive rows picked by the entry number, no index loads (not a
                    real kernel: the bound without index loads)
  compact_no_unpack vpdpbusd straight on the loaded rows (wrong sums: the cost of the unpacks)
  quads_pair        two entries' k quads in one 32-bit load, their weights in one 64-bit
                    broadcast (kernel: 2 + 2 loads)
  quads_no_index    as compact_no_index, for quads

and the port rates it runs against: vpdpbusd zmm throughput and latency, zmm loads from L1, and
byte unpacks. Every figure is the best of --rounds passes, the variants interleaved within a
pass (the host's load moves them together). Cycles use the clock measured by a chain of
dependent adds. Synthetic weights: random k, one 64-token panel of K rows (K * 64 bytes: all
of a 48 KiB L1 at K = 768), 768 columns.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

SOURCE = Path(__file__).with_suffix(".c")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--K", default="768,3072", help="panel rows (k), comma separated")
    ap.add_argument(
        "--entries", default="20,77", help="entries a column for each K (90%% sparsity: 20, 77)"
    )
    ap.add_argument("--rounds", type=int, default=15)
    args = ap.parse_args()
    Ks = [int(k) for k in args.K.split(",")]
    per = [int(p) for p in args.entries.split(",")]
    if len(per) != len(Ks) or any(k % 4 or k < 4 or k > 65535 for k in Ks) or min(per) < 1:
        sys.exit("spmm_loop_probe: --K multiples of 4 below 65536, one --entries value (>= 1) each")
    with tempfile.TemporaryDirectory() as tmp:
        exe = Path(tmp, "probe")
        cc = ["gcc", "-O3", "-march=native", "-std=gnu11", str(SOURCE), "-o", str(exe)]
        built = subprocess.run(cc, capture_output=True, text=True)
        if built.returncode:
            sys.exit(f"spmm_loop_probe: gcc failed (the probe needs AVX-512 VNNI):\n{built.stderr}")
        for k, p in zip(Ks, per, strict=True):
            run = subprocess.run([str(exe), str(k), str(p), str(args.rounds)])
            if run.returncode not in (0, 1):  # 0 / 1: the checksum's truth, to keep the sums live
                sys.exit(f"spmm_loop_probe: the probe exited with {run.returncode}")


if __name__ == "__main__":
    main()
