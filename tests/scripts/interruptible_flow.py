"""A flow that holds a resource while a task runs, for the signal tests.

Prints one marker per line (flushed): ``ready`` once the task runs with the
resource open; ``cleanup-started`` / ``cleanup-done <outcome>`` around cleanup.
With ``--slow-cleanup``, cleanup waits for a line on stdin before finishing, so
the test can send a second signal while it runs. With ``--async``, the flow and its
task are ``async def`` (run by ``asyncio.run``).
"""

import asyncio
import sys
import threading

from tether import flow, resource, task

slow_cleanup = "--slow-cleanup" in sys.argv
blocked = "--blocked" in sys.argv
is_async = "--async" in sys.argv


def say(marker: str) -> None:
    sys.stdout.write(marker + "\n")
    sys.stdout.flush()


@resource
def connection():
    say("setup")
    try:
        yield "conn"
    except BaseException as exc:
        say("cleanup-started")
        if slow_cleanup:
            sys.stdin.readline()
        say(f"cleanup-done failed:{type(exc).__name__}")
        raise
    say("cleanup-done succeeded")


@task
def busy(conn):
    say("ready")
    if blocked:
        threading.Event().wait()  # blocked in C: cannot be interrupted
    while True:
        pass


@flow
def main():
    with connection() as conn:
        busy.submit(conn)


@task
async def waiting(conn):
    say("ready")
    await asyncio.Event().wait()


@flow
async def main_async():
    with connection() as conn:
        waiting.submit(conn)
        await asyncio.Event().wait()


if __name__ == "__main__":
    if is_async:
        asyncio.run(main_async())
    else:
        main()
