"""`lychee-hf serve`: the service: documents uploaded once, questions answered over them by many users."""

import argparse
import dataclasses
import sys

from .arguments import add_command, add_model_arguments

NAME = "serve"
EXAMPLES = """examples:
  lychee-hf serve --banks banks/                                   # this machine only (127.0.0.1:8000), no keys
  lychee-hf serve --banks banks/ --api-keys keys.txt --host 0.0.0.0   # one `OWNER KEY` per line of keys.txt
  lychee-hf serve --model ckpt/ --banks banks/ --max-batch 16 --max-queue 256

Open http://127.0.0.1:8000/ for the web page; the API is under /v1 (OpenAI-compatible /v1/chat/completions too),
/healthz, /readyz and /metrics are for operations. Without --api-keys the server binds only a loopback address.
Documents, banks and the index live in --banks: a restart (or a second server on the same folder) picks them up,
and a compression cut short resumes. Needs the serve extra: pip install "lychee-hf[serve]"."""

# ServeLimits' fields as options: --max-upload-bytes, ..., with these help lines.
LIMIT_HELP = {
    "max_upload_bytes": "bytes of one document's text",
    "max_document_tokens": "tokens of one document",
    "max_documents_per_key": "documents one API key may keep",
    "max_disk_bytes_per_key": "bytes of banks one API key may keep",
    "max_questions_per_request": "questions in one request",
    "max_question_chars": "characters of one question",
    "max_new_tokens": "answer tokens a request may ask for",
    "max_queue": "questions waiting for the model (beyond: 429 with Retry-After)",
    "request_timeout_s": "seconds a request may wait for its answers (504 after)",
    "batch_window_ms": "milliseconds the scheduler waits for questions to batch together",
    "max_batch": "questions per generate call",
    "chunks_per_write": "chunks per compression step (questions are answered between steps)",
}


def add_parser(commands) -> argparse.ArgumentParser:
    from ..serve.limits import ServeLimits

    parser = add_command(
        commands, NAME, "serve documents and questions over HTTP (web page, API, OpenAI API)", EXAMPLES
    )
    parser.add_argument("--banks", required=True, help="folder of the documents and their banks (created if missing)")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8000, help="port to listen on (default: 8000)")
    parser.add_argument("--api-keys", help="file of API keys, one `KEY` or `OWNER KEY` per line (needed off localhost)")
    add_model_arguments(parser)
    limits = parser.add_argument_group("limits")
    for field in dataclasses.fields(ServeLimits):
        limits.add_argument(
            "--" + field.name.replace("_", "-"),
            type=type(field.default),
            default=field.default,
            help=f"{LIMIT_HELP[field.name]} (default: {field.default})",
        )
    return parser


def run(args: argparse.Namespace) -> int:
    from ..serve.keys import KeyRing, check_bind, read_api_keys
    from ..serve.limits import ServeLimits

    keys = read_api_keys(args.api_keys) if args.api_keys else None
    check_bind(args.host, KeyRing(keys))
    limits = ServeLimits(**{field.name: getattr(args, field.name) for field in dataclasses.fields(ServeLimits)})
    try:
        import uvicorn

        from ..serve.app import create_app
        from ..serve.logs import log_json_lines
    except ImportError as error:
        raise ImportError(f'lychee-hf serve needs the serve extra ({error}): pip install "lychee-hf[serve]"') from None
    log_json_lines()
    app = create_app(args.model, args.banks, keys, limits, dtype=args.dtype)
    who = f"{len(keys)} API keys" if keys else "no API keys: this machine only"
    print(f"lychee-hf serve: http://{args.host}:{args.port}/ ({who}; documents in {args.banks})", file=sys.stderr)
    uvicorn.run(app, host=args.host, port=args.port, access_log=False, log_level="warning" if args.quiet else "info")
    return 0
