"""``cli.common.run_trio``: Ctrl-C cancels a one-shot command's trio run and surfaces as
``KeyboardInterrupt`` after the run has unwound, whatever the run was doing; other outcomes pass through
as ``trio.run`` gives them."""

from __future__ import annotations

import signal
import subprocess
import sys

import pytest
import trio
from tidings.cli.common import run_trio

PROGRAM = """
import sys, time, trio
from tidings.cli.common import run_trio

async def main():
    print("ready", flush=True)
    try:
        while True:  # busy the way a sync is: threads handing results back to trio all the time
            await trio.to_thread.run_sync(time.sleep, 0.0005)
    finally:
        print("unwound", flush=True)

try:
    run_trio(main)
except KeyboardInterrupt:
    print("interrupted", flush=True)
    sys.exit(1)
"""


@pytest.mark.parametrize("attempt", range(5))
def test_ctrl_c_unwinds_the_run_then_raises_keyboard_interrupt(attempt):
    proc = subprocess.Popen(
        [sys.executable, "-c", PROGRAM], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 1 and out.split() == ["unwound", "interrupted"], (out, err)
    assert "Traceback" not in err and "TrioInternalError" not in err, err


def test_results_and_failures_pass_through():
    async def answer(x: int) -> int:
        await trio.sleep(0)
        return x + 1

    async def fails() -> None:
        await trio.sleep(0)
        raise trio.TooSlowError

    assert run_trio(answer, 41) == 42
    with pytest.raises(trio.TooSlowError):  # itself, not wrapped in an exception group
        run_trio(fails)


def test_a_failure_inside_nurseries_is_described_by_what_failed():
    """The one ``error:`` line names the exception that failed, not the trio nurseries around it."""
    from tidings.cli.common import describe

    inner = ValueError("the real reason")
    wrapped = BaseExceptionGroup("Exceptions from Trio nursery", [ExceptionGroup("nested", [inner])])
    message, code = describe(wrapped, None)
    assert code == "internal" and message.startswith("unexpected ValueError: the real reason")
    two = ExceptionGroup("Exceptions from Trio nursery", [ValueError("a"), KeyError("b")])
    assert describe(two, None)[0].startswith("unexpected ExceptionGroup")
