"""Every attack of the hardening work, against real nodes on loopback, one section after another.

Each section is a script of its own (``bench/attack_*.py``) that starts a real victim, a scripted
attacker and an honest peer, and prints the attacker's cost beside the victim's (bytes, CPU: the
amplification both ways) and the honest peer's time or success with and without the attack, side by
side in one run. This driver runs them in turn:

    python bench/attacks.py                 # every section at full size
    python bench/attacks.py --smoke         # every section, small and quick (CI)
    python bench/attacks.py idle dht        # only these sections

Goals (bench/RESULTS.md, "attacks"): no attack makes the victim spend more than 10x what it costs the
attacker, and no attack slows an honest sync by more than 2x.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent

#: section -> (script, the issue's items it covers)
SECTIONS: dict[str, tuple[str, str]] = {
    "idle": ("attack_idle.py", "idle connections and slow frames (item 1)"),
    "replay": ("attack_replay.py", "replayed fork proofs and replayed clocks (items 2, 3)"),
    "dht": ("attack_dht.py", "DHT record store floods (item 6)"),
    "web": ("attack_web.py", "connection floods, slow readers and deep JSON on the web port (item 7)"),
    "rss": ("attack_rss.py", "RSS bombs, huge feeds, slow drips and internal redirects (items 4, 5)"),
}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("sections", nargs="*", help=f"sections to run: {', '.join(SECTIONS)} (default: all)")
    parser.add_argument("--smoke", action="store_true", help="small and quick, for CI")
    args = parser.parse_args()
    unknown = [s for s in args.sections if s not in SECTIONS]
    if unknown:
        parser.error(f"no section {', '.join(unknown)}; sections: {', '.join(SECTIONS)}")
    failed = []
    for name in args.sections or list(SECTIONS):
        script, what = SECTIONS[name]
        print(f"== {name}: {what} (bench/{script})", flush=True)
        code = subprocess.call([sys.executable, str(HERE / script), *(["--smoke"] if args.smoke else [])])
        if code:
            failed.append(name)
    if failed:
        sys.exit(f"sections that failed: {', '.join(failed)}")


if __name__ == "__main__":
    main()
