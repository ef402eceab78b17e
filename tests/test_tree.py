"""Property tests of tree building over arbitrary (even inconsistent) snapshots."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from agent import schema
from observer.tree import build_tree

st.register_type_strategy(float, st.floats(allow_nan=False, allow_infinity=False))


@st.composite
def snapshots(draw):
    base = draw(st.from_type(schema.Snapshot))
    n = draw(st.integers(0, 40))
    loops = tuple(
        schema.LoopInfo(
            f"loop-{i}",
            "asyncio.X",
            draw(st.sampled_from([None, 1, 2, 3])),
            None,
            True,
            False,
            0,
            None,
        )
        for i in range(draw(st.integers(0, 3)))
    )
    threads = tuple(
        schema.ThreadInfo(
            f"thread-{i}",
            i,
            i,
            f"t{i}",
            False,
            True,
            "running",
            None,
            "",
            "",
            0,
            i == 1,
            False,
            None,
        )
        for i in range(1, draw(st.integers(1, 4)))
    )
    ids = [f"task-{i}" for i in range(n)]
    tasks = tuple(
        schema.TaskInfo(
            ids[i],
            f"n{i}",
            "pending",
            "c",
            "f",
            "",
            0,
            draw(st.sampled_from([lp.id for lp in loops] + ["loop-missing"])),
            None,
            tuple(draw(st.lists(st.sampled_from([*ids, "task-gone"]), max_size=3))) if ids else (),
            False,
        )
        for i in range(n)
    )
    pids = draw(st.lists(st.integers(2, 30), unique=True, max_size=6))
    children = tuple(
        schema.ChildInfo(
            f"pid-{p}",
            p,
            draw(st.sampled_from([1, *pids])),
            "c",
            (),
            "sleeping",
            None,
            None,
            0.0,
            None,
        )
        for p in pids
    )
    return schema.Snapshot(base.process, threads, loops, tasks, children, n, False, 0.0)


@settings(max_examples=200, deadline=None)
@given(snapshots())
def test_every_entity_appears_exactly_once(snap):
    root = build_tree(snap)
    seen = [node.id for _depth, node in root.walk()]
    expected = (
        [root.id]
        + [t.id for t in snap.threads]
        + [lp.id for lp in snap.loops]
        + [t.id for t in snap.tasks]
        + [c.id for c in snap.children]
    )
    assert sorted(seen) == sorted(expected)


def test_task_nested_under_awaiting_task():
    snap = schema.Snapshot(
        schema.ProcessInfo(
            "n",
            1,
            0,
            "p",
            (),
            "3",
            "CPython",
            "",
            "h",
            0.0,
            0.0,
            0.0,
            1,
            0,
            0,
            0,
            None,
            None,
            (),
            (),
            "0",
            1,
            0,
            0,
            (),
            "viewer",
            (),
        ),
        (),
        (schema.LoopInfo("loop-1", "L", None, None, True, False, 2, None),),
        (
            schema.TaskInfo(
                "task-1", "parent", "pending", "p", "p", "", 0, "loop-1", None, ("task-2",), False
            ),
            schema.TaskInfo(
                "task-2", "child", "pending", "c", "c", "", 0, "loop-1", None, (), False
            ),
        ),
        (),
        2,
        False,
        0.0,
    )
    root = build_tree(snap)
    loop = root.children[0]
    assert [c.name for c in loop.children] == ["parent"]
    assert [c.name for c in loop.children[0].children] == ["child"]


def test_child_label_says_what_a_python_child_runs():
    from observer.tree import child_label

    assert child_label("python3", ("/usr/bin/python3", "-u", "-m", "pkg.worker", "3")) == (
        "python3 -m pkg.worker 3"
    )
    assert child_label("python", ("python", "/srv/app/job.py", "--x")) == "python job.py --x"
    assert child_label("python", ("python", "-c", "import time")) == "python -c …"
    assert child_label("nginx", ("nginx", "-g", "daemon off;")) == "nginx"
    assert child_label("python", ("python",)) == "python"
