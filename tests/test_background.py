"""The background thread: order, flush, back-pressure, contained errors, fork safety."""

from __future__ import annotations

import os
import threading
import time

import milvus_audit
from milvus_audit.runtime.worker import Background


def test_runs_in_submission_order_and_flush_catches_up() -> None:
    worker = Background(batch_delay_s=0.001)
    done: list[int] = []
    for i in range(1000):
        worker.submit(done.append, i)
    worker.flush()
    assert done == list(range(1000))
    deadline = time.monotonic() + 5
    worker.submit(done.append, 1000)
    while len(done) < 1001 and time.monotonic() < deadline:  # the thread runs it without a flush
        time.sleep(0.01)
    assert done[-1] == 1000


def test_a_full_queue_runs_on_the_submitting_thread() -> None:
    worker = Background(batch_delay_s=60, max_pending=100)  # its thread sleeps through the test
    ran: list[tuple[int, str]] = []
    for i in range(250):
        worker.submit(lambda i=i: ran.append((i, threading.current_thread().name)))
        assert len(worker._queue) <= 100
    me = threading.current_thread().name
    assert ran == [(i, me) for i in range(len(ran))] and len(ran) >= 150  # the oldest first, here
    worker.flush()
    assert [i for i, _ in ran] == list(range(250))


def test_errors_are_contained_counted_and_do_not_stop_the_queue() -> None:
    worker = Background(batch_delay_s=60)
    done: list[str] = []
    before = milvus_audit.internal_error_count()

    def broken() -> None:
        raise RuntimeError("a broken meter provider")

    worker.submit(done.append, "before")
    worker.submit(broken)
    worker.submit(done.append, "after")
    worker.flush()
    assert done == ["before", "after"]
    assert milvus_audit.internal_error_count() == before + 1


def test_a_forked_child_does_not_run_its_parents_pending_work() -> None:
    worker = Background(batch_delay_s=60)
    read_end, write_end = os.pipe()
    worker.submit(os.write, write_end, b"parent ")
    os.register_at_fork(after_in_child=worker._forget_parent)
    pid = os.fork()
    if pid == 0:  # the child: reports what it runs, then exits without the parent's item
        try:
            worker.submit(os.write, write_end, b"child ")
            worker.flush()
        finally:
            os._exit(0)
    os.waitpid(pid, 0)
    worker.flush()
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        written = pipe.read()
    assert written == b"child parent "
