"""The documented multi-replica deployment (examples/serve/kubernetes.yaml) matches the server it deploys: what can be
checked without a cluster. Two real server processes on one store are tested in test_serve_processes.py."""

from pathlib import Path

import yaml

from lychee_hf.cli import build_parser
from lychee_hf.serve import create_app

MANIFEST = Path(__file__).resolve().parents[1] / "examples" / "serve" / "kubernetes.yaml"


def resources() -> dict:
    return {doc["kind"]: doc for doc in yaml.safe_load_all(MANIFEST.read_text(encoding="utf-8"))}


def container() -> dict:
    (serve,) = resources()["Deployment"]["spec"]["template"]["spec"]["containers"]
    return serve


def test_the_container_runs_lychee_hf_serve_with_arguments_it_accepts():
    serve = container()
    args = build_parser(training=False).parse_args(serve["args"])
    assert serve["command"] == ["lychee-hf"] and args.command == "serve"
    assert args.host == "0.0.0.0" and args.api_keys  # off localhost only with keys
    assert [port["containerPort"] for port in serve["ports"]] == [args.port]
    assert resources()["Service"]["spec"]["ports"][0]["targetPort"] == args.port


def test_replicas_share_one_read_write_many_bank_volume_and_mount_the_keys():
    found = resources()
    spec = found["Deployment"]["spec"]
    assert spec["replicas"] >= 2
    assert found["PersistentVolumeClaim"]["spec"]["accessModes"] == ["ReadWriteMany"]
    args = build_parser(training=False).parse_args(container()["args"])
    mounts = {mount["name"]: mount["mountPath"] for mount in container()["volumeMounts"]}
    volumes = {volume["name"]: volume for volume in spec["template"]["spec"]["volumes"]}
    assert mounts["banks"] == args.banks and "persistentVolumeClaim" in volumes["banks"]
    assert Path(args.api_keys).parent == Path(mounts["keys"]) and "secret" in volumes["keys"]


def test_the_probes_name_the_servers_health_and_readiness_routes(tmp_path):
    routes = set(create_app(None, tmp_path / "banks").openapi()["paths"])  # the model loads only when served
    serve = container()
    assert serve["readinessProbe"]["httpGet"]["path"] == "/readyz" in routes
    assert serve["livenessProbe"]["httpGet"]["path"] == "/healthz" in routes
