"""Cross-file checks of deploy/ that no schema can make (scripts/check-deploy).

Each check names the file and what is wrong; any failure exits non-zero.
"""
import json
import re
import sys
import tomllib
from pathlib import Path

import yaml

root = Path(__file__).resolve().parent.parent
k8s = root / "deploy" / "kubernetes"
errors = []


def check(ok, message):
    if not ok:
        errors.append(message)


def load(name):
    return yaml.safe_load((k8s / name).read_text())


kustomization = load("kustomization.yaml")
for resource in kustomization["resources"]:
    check((k8s / resource).exists(), f"kustomization.yaml lists {resource}, which does not exist")

deployment = load("deployment.yaml")
config_map = load("configmap.yaml")
service = load("service.yaml")
pdb = load("poddisruptionbudget.yaml")
monitor = load("servicemonitor.yaml")

config = tomllib.loads(config_map["data"]["engage.toml"])
pod = deployment["spec"]["template"]
container = pod["spec"]["containers"][0]
labels = pod["metadata"]["labels"]

# The config in the ConfigMap must load in engage: its keys are checked by
# tests/config (engage refuses unknown keys); here, the facts that tie files
# together.
listen_port = int(config["http"]["listen"].rsplit(":", 1)[1])
check(config["http"]["listen"].startswith("0.0.0.0:"), "configmap: http.listen must bind all interfaces in a pod")
ports = {p["name"]: p["containerPort"] for p in container["ports"]}
check(ports.get("http") == listen_port, f"deployment: container port http {ports.get('http')} != http.listen {listen_port}")
check(container["livenessProbe"]["httpGet"]["path"] == "/healthz", "deployment: liveness probe must be /healthz")
check(container["readinessProbe"]["httpGet"]["path"] == "/readyz", "deployment: readiness probe must be /readyz")
check(container["args"][-2:] == ["--config", "/etc/engage/engage.toml"], "deployment: engage must read the mounted config")
mount = next(m for m in container["volumeMounts"] if m["name"] == "config")
check(mount["mountPath"] == "/etc/engage", "deployment: config volume must mount at /etc/engage")

deadline = config.get("run", {}).get("shutdown_deadline", "30s")
m = re.fullmatch(r"(\d+)s", deadline)
check(m is not None, f"configmap: run.shutdown_deadline {deadline!r} should be whole seconds")
if m:
    check(pod["spec"]["terminationGracePeriodSeconds"] > int(m.group(1)),
          "deployment: terminationGracePeriodSeconds must exceed run.shutdown_deadline")
check(pod["spec"]["securityContext"].get("runAsNonRoot") is True, "deployment: must run as non-root")
check("limits" in container["resources"] and "requests" in container["resources"], "deployment: resources needed")
annotations = pod["metadata"].get("annotations", {})
check(annotations.get("prometheus.io/port") == str(listen_port), "deployment: scrape annotation port != http.listen")

for name, selector in [("service", service["spec"]["selector"]),
                       ("poddisruptionbudget", pdb["spec"]["selector"]["matchLabels"]),
                       ("deployment", deployment["spec"]["selector"]["matchLabels"])]:
    check(all(labels.get(k) == v for k, v in selector.items()), f"{name}: selector does not match the pod labels")
service_ports = {p["name"]: p for p in service["spec"]["ports"]}
check(service_ports.get("http", {}).get("targetPort") == "http", "service: port http must target the container's http port")

# ServiceMonitor (CRD, no bundled schema): the fields the Operator needs.
check(monitor["apiVersion"] == "monitoring.coreos.com/v1" and monitor["kind"] == "ServiceMonitor",
      "servicemonitor: wrong apiVersion/kind")
check(all(service["metadata"]["labels"].get(k) == v for k, v in monitor["spec"]["selector"]["matchLabels"].items()),
      "servicemonitor: selector does not match the service's labels")
for endpoint in monitor["spec"]["endpoints"]:
    check(endpoint["port"] in service_ports, f"servicemonitor: endpoint port {endpoint['port']} is not a service port")
    check(endpoint.get("path") == "/metrics", "servicemonitor: path must be /metrics")

secret_refs = {e["valueFrom"]["secretKeyRef"]["name"] for e in container.get("env", []) if "valueFrom" in e}
example = load("secret.example.yaml")
check(secret_refs == {example["metadata"]["name"]}, "deployment: Secret references must match secret.example.yaml")

dashboard = json.loads((root / "deploy" / "grafana" / "engage.json").read_text())
ids = [p["id"] for p in dashboard["panels"]]
check(len(ids) == len(set(ids)), "grafana: panel ids must be unique")
for p in dashboard["panels"]:
    check(p.get("targets") and all(t.get("expr") for t in p["targets"]), f"grafana: panel {p['title']!r} has no query")

if errors:
    print("check_deploy: " + "\n  ".join(["FAILED"] + errors), file=sys.stderr)
    sys.exit(1)
