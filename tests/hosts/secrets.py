"""A host planted with secrets in every form (tests/attack/forms.py lays them out).

Usage: python -m tests.hosts.secrets KEYDIR PLANT_JSON [--password X --token=Y ...]
PLANT_JSON names the values to hold (``values``), the child's argv (``child_argv``) and a
settings module with hard-coded secrets (``module``). The host keeps them in its argv, its
child's argv, a task's and a thread's locals (as str, bytes and inside structures), exposed
objects, and a thread standing on a source line that holds secrets. Prints ``agent: HOST:PORT``
and ``ready`` when everything is in place.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import json
import subprocess
import sys
import threading
from typing import Any

import agent
from tests.hosts.child import spawn_argv
from tests.hosts.common import start_agent


def say(line: str) -> None:
    print(line, flush=True)


class ApiClient:
    """An object whose attributes have innocent names and secret values."""

    def __init__(self, values: dict[str, str]) -> None:
        self.endpoint = values["exp_client_dsn"]
        self.headers = [["X-Api-Key", values["exp_client_header"]]]
        self.encoded = values["exp_client_creds"]
        self.retries = 3


async def keeper(values: dict[str, str]) -> None:
    """A task whose locals hold every value form under an innocent name, as str and bytes
    (held_15 and held_16 as bytes)."""
    held_01 = values["held_01"]  # noqa: F841
    held_02 = values["held_02"]  # noqa: F841
    held_03 = values["held_03"]  # noqa: F841
    held_04 = values["held_04"]  # noqa: F841
    held_05 = values["held_05"]  # noqa: F841
    held_06 = values["held_06"]  # noqa: F841
    held_07 = values["held_07"]  # noqa: F841
    held_08 = values["held_08"]  # noqa: F841
    held_09 = values["held_09"]  # noqa: F841
    held_10 = values["held_10"]  # noqa: F841
    held_11 = values["held_11"]  # noqa: F841
    held_12 = values["held_12"]  # noqa: F841
    held_13 = values["held_13"]  # noqa: F841
    held_14 = values["held_14"]  # noqa: F841
    held_15 = values["held_15"].encode()  # noqa: F841
    held_16 = values["held_16"].encode()  # noqa: F841
    values.clear()  # the plan itself holds bare secrets under innocent keys: not a plant
    await asyncio.sleep(3600)  # KEEPER-LINE


def holder(values: dict[str, str], stop: threading.Event) -> None:
    """A thread whose locals hold secrets inside structures, under innocent names."""
    st_cmd = ["pg_dump", "--password", values["st_cmd"], "--verbose"]  # noqa: F841
    st_argv_tuple = ("--api-key", values["st_argv_tuple"], "--retries", "3")  # noqa: F841
    st_bytes_cmd = [b"curl", b"--token", values["st_bytes_cmd"].encode()]  # noqa: F841
    st_tuple_keyed = {("db", "password"): values["st_tuple_keyed"], ("db", "host"): "h"}  # noqa: F841
    st_headers = [  # noqa: F841
        ("X-Auth-Token", values["st_header_tuple"]),
        ["Authorization", values["st_header_list"]],
    ]
    st_multidict = [  # noqa: F841
        (b"x-auth-token", b"X-Auth-Token", values["st_multidict"].encode()),
        (b"accept", b"Accept", b"*/*"),
    ]
    st_pair = ("admin", values["st_pair"])  # noqa: F841
    st_opts = {"timeout": 3, "basic": ("admin", values["st_opts"])}  # noqa: F841
    st_nested = {"a": [{"b": (values["st_nested"],)}]}  # noqa: F841
    st_urls = ["https://example.com/", values["st_urls"]]  # noqa: F841
    values.clear()  # the plan itself holds bare secrets under innocent keys: not a plant
    stop.wait()  # HOLDER-LINE


def load_module(path: str) -> Any:
    """Import the planted settings module from its file (it is then a loaded module)."""
    spec = importlib.util.spec_from_file_location("planted_settings", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["planted_settings"] = module
    spec.loader.exec_module(module)
    return module


async def main(args: argparse.Namespace, extra: list[str]) -> None:
    with open(args.plan) as fh:
        plan = json.load(fh)
    values: dict[str, str] = plan["values"]
    server = start_agent(args.keys, "secrets-host")
    settings = load_module(plan["module"])
    agent.expose(
        "vault_settings",
        {
            "upstream": values["exp_upstream"],
            "hook": values["exp_hook"],
            "signing": values["exp_pem"],
            "pair": ("svc", values["exp_pair"]),
            ("smtp", "password"): values["exp_tuple_key"],
            "headers": [(b"Authorization", values["exp_header"].encode())],
        },
    )
    agent.expose("api_client", ApiClient(values))
    stop = threading.Event()
    threading.Thread(target=settings.hold, args=(stop,), name="settings-hold", daemon=True).start()
    argv, env = spawn_argv(sys.executable, *plan["child_argv"])
    child = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL)
    task = asyncio.create_task(keeper(dict(values)), name="keeper")
    threading.Thread(target=holder, args=(dict(values), stop), name="holder", daemon=True).start()
    del plan, values  # bare secrets under innocent keys: not a plant
    say(f"agent: {server.address}")
    say(f"child: {child.pid}")
    say("ready")
    try:
        await task
    finally:
        child.terminate()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("keys")
    parser.add_argument("plan")
    parser.add_argument("--password")
    parser.add_argument("--token")
    parser.add_argument("--api-key")
    parser.add_argument("--assertion")
    parser.add_argument("--notify")
    parser.add_argument("--origin")
    parser.add_argument("--login")
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main(*parser.parse_known_args()))  # the DSN comes as an extra argument
