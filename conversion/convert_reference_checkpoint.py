"""Convert the authors' LycheeMemory checkpoint (e.g. lerverson/LycheeMemory-7B) into a lychee-hf checkpoint.

    python conversion/convert_reference_checkpoint.py SOURCE DESTINATION [--chunk-size 4096] [--memory-budget 1024]

Same as `lychee-hf convert`; the work is done by `lychee_hf.convert_reference.convert_reference_checkpoint`.
"""

import argparse
import sys

from lychee_hf.cli import main
from lychee_hf.commands.convert import add_convert_arguments

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_convert_arguments(parser)
    parser.parse_args()  # --help and argument errors here; the CLI parses the same arguments again
    sys.exit(main(["convert", *sys.argv[1:]]))
