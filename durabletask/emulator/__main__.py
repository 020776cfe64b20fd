"""``python -m durabletask.emulator [options]``: the same as ``durabletask emulator [options]``."""

import sys

from durabletask.cli import main

if __name__ == "__main__":
    sys.exit(main(["emulator", *sys.argv[1:]]))
