"""Run the fuzz campaign bigger than CI does and print its figures.

    KERAS_BACKEND=jax python tests/fuzz/campaign.py --scale 10

Runs tests/fuzz/test_fuzz_inputs.py with KF_FUZZ_SCALE (cases x scale) in record-only mode,
then prints, per target: cases tried and each outcome (see harness.py), the clear-error rate
among refused inputs, and a few example inputs for every bad outcome.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
COLUMNS = ("ok", "clear", "crash", "hang", "bomb", "code", "silent", "undetectable", "documented")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scale", type=float, default=10)
    args = parser.parse_args()
    report = os.path.join(tempfile.mkdtemp(), "fuzz.json")
    env = dict(os.environ, KF_FUZZ_SCALE=str(args.scale), KF_FUZZ_REPORT=report)
    subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                    os.path.join(HERE, "test_fuzz_inputs.py")], cwd=REPO, env=env, check=False)
    with open(report) as f:
        data = json.load(f)
    print(f"\nbackend={os.environ.get('KERAS_BACKEND', 'jax')} scale={args.scale} "
          f"seconds={data['seconds']}")
    print(f"{'target':<30} {'cases':>6} " + " ".join(f"{c:>6.6}" for c in COLUMNS)
          + "  clear-error rate")
    totals = {}
    for target, counts in sorted(data["counts"].items()):
        cases = sum(counts.values())
        refused = cases - counts.get("ok", 0) - counts.get("undetectable", 0) - counts.get(
            "documented", 0)
        rate = f"{counts.get('clear', 0) / refused:.1%}" if refused else "-"
        print(f"{target:<30} {cases:>6} " + " ".join(f"{counts.get(c, 0):>6}" for c in COLUMNS)
              + f"  {rate}")
        for key, value in counts.items():
            totals[key] = totals.get(key, 0) + value
    print(f"{'TOTAL':<30} {sum(totals.values()):>6} "
          + " ".join(f"{totals.get(c, 0):>6}" for c in COLUMNS))
    for key, cases in data["examples"].items():
        print(f"\n{key}:")
        for case in cases:
            print("  ", case)


if __name__ == "__main__":
    main()
