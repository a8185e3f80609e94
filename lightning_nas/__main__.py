"""``python -m lightning_nas <command>``: the program (a usage error → one ``error:`` line, exit code 2)."""

from lightning_nas.cli import main

if __name__ == "__main__":
    main()
