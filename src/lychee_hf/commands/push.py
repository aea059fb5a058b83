"""`lychee-hf push`: upload a checkpoint (model repo) or a memory bank (dataset repo) to the Hub."""

import argparse

from .arguments import add_command

NAME = "push"
EXAMPLES = """examples:
  lychee-hf push ./LycheeMemory-7B-hf --repo-id me/LycheeMemory-7B-hf --private --dry-run
  lychee-hf push bank/ --repo-id me/my-document-bank"""


def add_parser(commands) -> argparse.ArgumentParser:
    parser = add_command(commands, NAME, "upload a checkpoint (model repo) or a memory bank (dataset repo)", EXAMPLES)
    add_push_arguments(parser)
    return parser


def add_push_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of `lychee-hf push` (shared with conversion/push_to_hub.py)."""
    parser.add_argument("folder", help="a lychee-hf checkpoint or memory-bank folder")
    parser.add_argument("--repo-id", required=True, help="ORG/NAME on the Hub")
    parser.add_argument("--private", action="store_true", help="create the repo private (default public)")
    parser.add_argument("--revision", help="branch to upload to (created if missing)")
    parser.add_argument("--commit-message", help="commit message")
    parser.add_argument("--dry-run", action="store_true", help="print the file list and the card; send nothing")
    parser.add_argument("--no-check", action="store_true", help="skip the reload-and-generate check (not advised)")


def run(args: argparse.Namespace) -> int:
    from ..hub import push_to_hub

    result = push_to_hub(
        args.folder,
        args.repo_id,
        private=args.private,
        revision=args.revision,
        commit_message=args.commit_message,
        dry_run=args.dry_run,
        check=not args.no_check,
    )
    print(result.describe() if args.dry_run else f"uploaded: {result}")
    return 0
