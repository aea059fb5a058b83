"""Publish a lychee-hf checkpoint (model repo) or memory bank (dataset repo) to the Hugging Face Hub.

    python conversion/push_to_hub.py FOLDER --repo-id ORG/NAME [--private] [--revision BRANCH] [--dry-run]

Same as `lychee-hf push`; the work is done by `lychee_hf.hub.push_to_hub`, which first reloads the checkpoint
with trust_remote_code in a fresh process and runs a short generate, so a broken checkpoint is never published.
"""

import argparse
import sys

from lychee_hf.cli import main
from lychee_hf.commands.push import add_push_arguments

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_push_arguments(parser)
    parser.parse_args()  # --help and argument errors here; the CLI parses the same arguments again
    sys.exit(main(["push", *sys.argv[1:]]))
