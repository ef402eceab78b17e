from observer.cli import run

run()
