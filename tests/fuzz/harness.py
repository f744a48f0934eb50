"""Shared machinery of the hostile-input fuzz campaign (issue 11).

Every fuzz case ends in one outcome:

* ``ok``      -- accepted, and (where a reference exists) equal to it;
* ``clear``   -- refused with a ``KerasformerError`` (CheckpointError, ...);
* ``crash``   -- any other exception (a raw Python / numpy / backend error);
* ``hang``    -- over the per-case time limit;
* ``bomb``    -- peak traced memory over ``BOMB_BYTES`` for a small input;
* ``silent``  -- accepted, but different from the reference (a silent wrong result);
* ``code``    -- a payload ran (its canary file exists).

``record`` counts them per target; in CI (the default) anything but ok / clear fails the
test. ``KF_FUZZ_REPORT=path`` only records and writes the counts to ``path`` (campaign.py),
and ``KF_FUZZ_SCALE`` multiplies the number of cases.
"""
import collections
import json
import os
import signal
import time
import tracemalloc

from kerasformer.errors import KerasformerError

SCALE = float(os.environ.get("KF_FUZZ_SCALE", "1"))
REPORT = os.environ.get("KF_FUZZ_REPORT")
TIME_LIMIT = 10  # seconds per case
BOMB_BYTES = 256 << 20  # inputs are kilobytes: a quarter GiB of allocations is a memory bomb
BAD = ("crash", "hang", "bomb", "silent", "code")

COUNTS = collections.defaultdict(collections.Counter)
EXAMPLES = collections.defaultdict(list)  # a few failing inputs per target and outcome
START = time.time()


def examples(n):
    """Hypothesis max_examples for a target that runs ``n`` cases at scale 1."""
    return max(1, int(n * SCALE))


class _Hang(BaseException):
    pass


def _alarm(signum, frame):
    raise _Hang()


def run_case(fn, trace_memory=True, limit=TIME_LIMIT):
    """(outcome, detail) of calling ``fn()``; ``fn`` returns 'ok' or 'silent' itself.
    ``limit`` is wall-clock seconds (generous: CI machines are shared)."""
    previous = signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(limit)
    if trace_memory:
        tracemalloc.start()
    try:
        outcome, detail = fn() or "ok", ""
    except _Hang:
        outcome, detail = "hang", ""
    except KerasformerError as e:
        outcome, detail = "clear", str(e)[:200]
    except RecursionError as e:
        outcome, detail = "crash", f"RecursionError: {str(e)[:200]}"
    except Exception as e:  # noqa: BLE001 -- classifying every failure is the point
        outcome, detail = "crash", f"{type(e).__name__}: {str(e)[:200]}"
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
        if trace_memory:
            peak = tracemalloc.get_traced_memory()[1]
            tracemalloc.stop()
    if trace_memory and peak > BOMB_BYTES and outcome in ("ok", "clear"):
        outcome, detail = "bomb", f"peak {peak >> 20} MiB"
    return outcome, detail


def record(target, outcome, detail="", case=None):
    """Count one case; in CI mode fail on a bad outcome, naming the case."""
    COUNTS[target][outcome] += 1
    if outcome in BAD and len(EXAMPLES[(target, outcome)]) < 3:
        EXAMPLES[(target, outcome)].append(f"{detail} | case: {repr(case)[:300]}")
    if REPORT is None:
        assert outcome not in BAD, f"{target}: {outcome}: {detail} (case {repr(case)[:500]})"


def write_report():
    if REPORT is None:
        return
    data = {"seconds": round(time.time() - START, 1),
            "counts": {t: dict(c) for t, c in COUNTS.items()},
            "examples": {f"{t}/{o}": v for (t, o), v in EXAMPLES.items()}}
    with open(REPORT, "w") as f:
        json.dump(data, f, indent=1)
