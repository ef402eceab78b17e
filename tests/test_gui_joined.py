"""The Processes tab's refresh of a master and its workers (observer.gui.joined), against
a real master with real forked workers (tests/hosts/forker.py --workers): each process
followed from what changed in it, a steady refresh moving few rows, a worker's new task
appearing, a killed worker's rows going and its replacement's coming.
"""

from __future__ import annotations

import os
import signal

from observer.gui.delta import TASK_LIMIT, Delta, Shadow
from observer.gui.joined import joined_delta, joined_of
from observer.gui.rows import NAME, STATE, TARGET
from observer.gui.workers import process_tree_delta, worker_of
from observer.tree import build_tree, graft_workers
from tests.helpers import wait_until
from tests.test_forks import forker  # noqa: F401  (the fixture)


def jobs(shadow: Shadow, pid: int) -> list[str]:
    """Ids of the worker-job task rows of worker ``pid`` in the tab's rows."""
    return [
        target
        for target, record in shadow.rows.items()
        if record[1] == "task"
        and record[2][NAME] == "worker-job"
        and target.startswith(f"pid-{pid}/task-")
    ]


def two_workers(forker):  # noqa: F811
    """A master with two forked workers, each running a loop of worker-job tasks."""
    master = forker("--workers")
    return master, [master.fork("fork", "loop")[0] for _ in range(2)]


def followed(node, pids: list[int], seen: list[Delta]) -> Shadow:
    """The tab's rows of ``node``, refreshed until every worker's job shows."""
    shadow = Shadow()
    wait_until(lambda: all(jobs(refresh(node, shadow, seen), pid) for pid in pids), timeout=20)
    return shadow


def refresh(node, shadow: Shadow, seen: list[Delta]) -> Shadow:
    seen.append(process_tree_delta(node, shadow))
    return shadow


def test_a_steady_refresh_moves_few_rows_and_the_workers_send_no_task_rows(forker):  # noqa: F811
    """After the first (full) refresh, refreshes of an unchanged master with two workers
    are small deltas in which each worker's agent sent no task row; the rows held are the
    tree the whole walk (graft_workers) draws: same ids, same parents, same targets. A
    worker that gives no answer shows why on its row, its subtree gone until it answers."""
    master, pids = two_workers(forker)
    seen: list[Delta] = []
    with master.connect() as node:
        shadow = followed(node, pids, seen)
        assert seen[0].full is not None
        for _ in range(3):
            delta = process_tree_delta(node, shadow)
            assert delta.full is None and delta.size <= 10, (delta.size, delta.new, delta.gone)
            for pid in pids:
                listing = worker_of(node, pid).last_listing
                assert listing is not None and listing.base > 0 and listing.rows == 0, listing
        assert delta.counts["worker"] == 2 and delta.counts["task"] >= 2
        snap = node.snapshot()
        workers = {pid: node.worker(pid).snapshot() for pid in pids}
        whole = {
            node.id: (parent, node.kind)
            for parent, node in _with_parents(graft_workers(build_tree(snap), workers))
        }
        held = {target: (record[0], record[1]) for target, record in shadow.rows.items()}
        assert held == whole
        assert all(record[2][TARGET] == target for target, record in shadow.rows.items())

        # a worker that gives no answer: its row says why, its subtree goes; then back
        joined = joined_of(shadow)
        master_changes = node.changes(joined.cursor(), TASK_LIMIT)
        _found, got = node.worker_changes([(worker_of(node, pids[1]), joined.cursor(pids[1]))])
        mute = {pids[0]: "unreachable: frozen", pids[1]: got[pids[1]]}
        delta = joined_delta(shadow, master_changes, mute)
        assert delta.full is None
        assert shadow.rows[f"pid-{pids[0]}"][2][STATE] == "unreachable: frozen"
        assert not [t for t in shadow.rows if t.startswith(f"pid-{pids[0]}/")] and jobs(
            shadow, pids[1]
        )
        delta = process_tree_delta(node, shadow)
        assert delta.full is None and jobs(shadow, pids[0])
        assert shadow.rows[f"pid-{pids[0]}"][2][STATE] != "unreachable: frozen"
    for pid in pids:
        os.kill(pid, signal.SIGTERM)
        assert master.reap(pid) == -15


def test_a_new_task_in_a_worker_appears_and_a_killed_workers_rows_go(forker):  # noqa: F811
    """A worker's job cancelled (it starts a new one): the new task's row comes in a
    small delta. A worker killed and another forked: the dead one's rows go, every one of
    them, and the newcomer's come, its listing started afresh."""
    master, pids = two_workers(forker)
    seen: list[Delta] = []
    with master.connect() as node:
        shadow = followed(node, pids, seen)
        (old_job,) = jobs(shadow, pids[1])
        assert node.worker(pids[1]).cancel(old_job.split("/", 1)[1]).ok
        wait_until(lambda: jobs(refresh(node, shadow, seen), pids[1]) not in ([], [old_job]))
        assert seen[-1].full is None
        assert old_job not in shadow.rows

        os.kill(pids[0], signal.SIGKILL)
        assert master.reap(pids[0]) == -9
        newcomer = master.fork("fork", "loop")[0]
        mark = len(seen)
        wait_until(lambda: jobs(refresh(node, shadow, seen), newcomer), timeout=20)
        assert not [t for t in shadow.rows if t.startswith(f"pid-{pids[0]}/")]
        assert jobs(shadow, pids[1])  # the other worker's rows stay
        gone = {t for delta in seen[mark:] for t in delta.gone}
        assert any(t.startswith(f"pid-{pids[0]}/") for t in gone) or any(
            d.full is not None for d in seen[mark:]
        )
        assert worker_of(node, newcomer).last_listing.base == 0  # a first listing
    for pid in (pids[1], newcomer):
        os.kill(pid, signal.SIGTERM)
        assert master.reap(pid) == -15


def _with_parents(top):  # type: ignore[no-untyped-def]
    """(parent id, node) for every node of a tree, parents first."""
    stack = [("", top)]
    while stack:
        parent, node = stack.pop()
        yield parent, node
        stack.extend((node.id, child) for child in node.children)
