"""A local HTTP server speaking the few Hub endpoints `create_repo`, `create_branch` and `upload_folder` use.

It listens on 127.0.0.1 only, stores committed files under a folder (`<store>/<type>s/<org>/<name>/<revision>/`),
answers every preupload with "regular" (so files travel base64 inside the commit, no LFS or Xet), and records
every request so that tests can assert what was (or was not) sent.
"""

import base64
import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlparse

import yaml


class FakeHub:
    def __init__(self, store: Path):
        self.store = store
        self.requests: list[tuple[str, str, dict | None]] = []
        self.repos: dict[str, dict] = {}
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output clean
                pass

            def do_POST(self):  # noqa: N802 (http.server's naming)
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                status, payload = hub.handle("POST", urlparse(self.path).path, body)
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_PUT = do_POST  # noqa: N815

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()

    def handle(self, method: str, path: str, body: bytes) -> tuple[int, dict]:
        if path == "/api/repos/create":
            payload = json.loads(body)
            self.requests.append((method, path, payload))
            repo_id = f"{payload['organization']}/{payload['name']}"
            self.repos[repo_id] = payload
            return 200, {"url": f"{self.endpoint}/{repo_id}", "name": repo_id}
        if path == "/api/validate-yaml":  # the Hub checks a README's front matter before committing it
            content = json.loads(body)["content"]
            self.requests.append((method, path, {"validated": True}))
            try:
                yaml.safe_load(content.split("---")[1])
            except (IndexError, yaml.YAMLError) as error:
                return 400, {"error": f"invalid YAML front matter: {error}"}
            return 200, {"warnings": []}
        match = re.fullmatch(r"/api/(\w+)s/([^/]+/[^/]+)/(preupload|commit|branch)/(.+)", path)
        if not match:
            self.requests.append((method, path, None))
            return 404, {"error": f"fake hub does not serve {method} {path}"}
        repo_type, repo_id, action, revision = match.groups()
        revision = unquote(revision)
        if action == "preupload":
            files = json.loads(body)["files"]
            self.requests.append((method, path, {"files": [f["path"] for f in files]}))
            return 200, {"files": [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False} for f in files]}
        if action == "branch":
            self.requests.append((method, path, {"branch": revision}))
            return 200, {}
        lines = [json.loads(line) for line in body.decode().splitlines() if line.strip()]
        header = next(line["value"] for line in lines if line["key"] == "header")
        target = self.store / f"{repo_type}s" / repo_id / revision
        written = []
        for line in lines:
            if line["key"] == "file":
                path_in_repo = line["value"]["path"]
                (target / path_in_repo).parent.mkdir(parents=True, exist_ok=True)
                (target / path_in_repo).write_bytes(base64.b64decode(line["value"]["content"]))
                written.append(path_in_repo)
        self.requests.append((method, path, {"summary": header["summary"], "files": written}))
        return 200, {"commitUrl": f"{self.endpoint}/{repo_id}/commit/0123abcd", "commitOid": "0123abcd" * 5}
