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

secret_refs = {e["valueFrom"]["secretKeyRef"]["name"] for e in container.get("env", [])
               if "secretKeyRef" in e.get("valueFrom", {})}
example = load("secret.example.yaml")
check(secret_refs == {example["metadata"]["name"]}, "deployment: Secret references must match secret.example.yaml")

# The customer API: its own port, its own Service, tokens from a Secret
# mounted as a file, an advertised URL from the pod's IP, and a
# NetworkPolicy that admits only labelled clients to it and only
# Prometheus to the ops port.
api = config.get("api", {})
check(api.get("listen", "").startswith("0.0.0.0:"), "configmap: api.listen must be set and bind all interfaces")
api_port = int(api.get("listen", "0:0").rsplit(":", 1)[1])
check(api_port != listen_port, "configmap: api.listen and http.listen must be different ports")
check(ports.get("api") == api_port, f"deployment: container port api {ports.get('api')} != api.listen {api_port}")
check(not api.get("allow_unauthenticated", False), "configmap: api.allow_unauthenticated must not be set in a cluster")
token_file = api.get("token_file", "")
check(token_file.startswith("/"), "configmap: api.token_file must name the mounted Secret's file")
token_dir, _, token_key = token_file.rpartition("/")
token_mount = next((m for m in container["volumeMounts"] if m["mountPath"] == token_dir), None)
check(token_mount is not None, f"deployment: no volume mounted at {token_dir} for api.token_file")
tokens_example = load("secret-api-tokens.example.yaml")
if token_mount:
    check("subPath" not in token_mount, "deployment: the token Secret must be mounted as a directory (subPath never updates)")
    volume = next((v for v in pod["spec"]["volumes"] if v["name"] == token_mount["name"]), {})
    check(volume.get("secret", {}).get("secretName") == tokens_example["metadata"]["name"],
          "deployment: api.token_file must come from the Secret in secret-api-tokens.example.yaml")
    check(token_key in tokens_example.get("stringData", {}),
          f"secret-api-tokens.example.yaml: no key {token_key!r}, the file api.token_file names")
env = {e["name"]: e for e in container.get("env", [])}
advertised = env.get("ENGAGE__API__ADVERTISED_URL", {}).get("value", "")
check(advertised == f"http://$(POD_IP):{api_port}" or advertised == f"https://$(POD_IP):{api_port}",
      "deployment: ENGAGE__API__ADVERTISED_URL must be the pod's IP and the API port")
check(env.get("POD_IP", {}).get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") == "status.podIP",
      "deployment: POD_IP must come from status.podIP")
check(list(env).index("POD_IP") < list(env).index("ENGAGE__API__ADVERTISED_URL") if "POD_IP" in env and advertised else False,
      "deployment: POD_IP must be defined before the variable that uses it")

api_service = load("service-api.yaml")
api_service_ports = {p["name"]: p for p in api_service["spec"]["ports"]}
check(all(labels.get(k) == v for k, v in api_service["spec"]["selector"].items()),
      "service-api: selector does not match the pod labels")
check(set(api_service_ports) == {"api"} and api_service_ports["api"]["targetPort"] == "api",
      "service-api: must expose only the container's api port")
check("api" not in service_ports and all(p.get("targetPort") != "api" for p in service_ports.values()),
      "service: the ops Service must not expose the API port")
check(not all(api_service["metadata"]["labels"].get(k) == v for k, v in monitor["spec"]["selector"]["matchLabels"].items()),
      "servicemonitor: must not select the API Service")

policy = load("networkpolicy.yaml")
check(policy["kind"] == "NetworkPolicy", "networkpolicy: wrong kind")
check(all(labels.get(k) == v for k, v in policy["spec"]["podSelector"]["matchLabels"].items()),
      "networkpolicy: podSelector does not match the pod labels")
check("Ingress" in policy["spec"].get("policyTypes", []), "networkpolicy: must restrict Ingress")
admitted = {"api": [], "http": []}
for rule in policy["spec"].get("ingress", []):
    rule_ports = [p.get("port") for p in rule.get("ports", [])]
    sources = rule.get("from", [])
    check(rule_ports, "networkpolicy: a rule without ports admits every port")
    check(sources, "networkpolicy: a rule without from admits everyone")
    for port in rule_ports:
        check(port in admitted, f"networkpolicy: port {port} is neither api nor http")
        admitted.setdefault(port, []).extend(sources)
for source in admitted["api"]:
    selector = source.get("podSelector", {}).get("matchLabels", {})
    check(selector and "namespaceSelector" not in source and "ipBlock" not in source,
          "networkpolicy: the API port must admit labelled pods only")
    check(selector == {"app.kubernetes.io/name": labels["app.kubernetes.io/name"]} or
          any(k not in labels for k in selector),
          f"networkpolicy: API source {selector} must be engage's own pods or a client label engage's pods lack")
check(any(s.get("podSelector", {}).get("matchLabels") == {"app.kubernetes.io/name": labels["app.kubernetes.io/name"]}
          for s in admitted["api"]), "networkpolicy: the engage pods must reach each other's API (forwarding)")
check(admitted["api"] and any(s.get("podSelector", {}).get("matchLabels", {}).keys() - labels.keys() for s in admitted["api"]),
      "networkpolicy: the API port must admit a client label")
check(admitted["http"] and all(s.get("podSelector", {}).get("matchLabels", {}).get("app.kubernetes.io/name") == "prometheus"
                               for s in admitted["http"]),
      "networkpolicy: the ops port must admit Prometheus only")

dashboard = json.loads((root / "deploy" / "grafana" / "engage.json").read_text())
ids = [p["id"] for p in dashboard["panels"]]
check(len(ids) == len(set(ids)), "grafana: panel ids must be unique")
for p in dashboard["panels"]:
    check(p.get("targets") and all(t.get("expr") for t in p["targets"]), f"grafana: panel {p['title']!r} has no query")

if errors:
    print("check_deploy: " + "\n  ".join(["FAILED"] + errors), file=sys.stderr)
    sys.exit(1)
