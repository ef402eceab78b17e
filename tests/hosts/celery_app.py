"""A Celery app with no broker server, for tests/test_celery.py: kombu's filesystem
transport (a directory the test names in CELERY_TEST_DIR) and a file result backend,
so a real ``celery worker --pool prefork`` runs here and the test sends it tasks."""

from __future__ import annotations

import os
import time

from celery import Celery


def make_app(folder: str) -> Celery:
    app = Celery("celery_app", broker="filesystem://", backend=f"file://{folder}/results")
    os.makedirs(f"{folder}/queue", exist_ok=True)
    os.makedirs(f"{folder}/results", exist_ok=True)
    app.conf.broker_transport_options = {
        "data_folder_in": f"{folder}/queue",
        "data_folder_out": f"{folder}/queue",
        "store_processed": False,
    }
    app.conf.broker_connection_retry_on_startup = True

    @app.task(name="worker_pid")
    def worker_pid() -> int:
        return os.getpid()

    @app.task(name="busy")
    def busy(seconds: float) -> int:
        """Note this worker's pid in FOLDER/busy, then work for ``seconds``."""
        with open(f"{folder}/busy.tmp", "w") as fh:
            fh.write(str(os.getpid()))
        os.replace(f"{folder}/busy.tmp", f"{folder}/busy")
        time.sleep(seconds)
        return os.getpid()

    return app


app = make_app(os.environ["CELERY_TEST_DIR"]) if "CELERY_TEST_DIR" in os.environ else None
