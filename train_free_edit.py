#!/usr/bin/env python3
"""pix2pix-zero from the command line: `python train_free_edit.py --help`, or the same as `pix2pix-zero --help`
once the package is installed. The commands live in pix2pix_zero/cli.py."""
import sys

from pix2pix_zero.cli import main

if __name__ == "__main__":
    sys.exit(main())
