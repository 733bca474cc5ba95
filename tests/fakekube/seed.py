"""Object builders for the blue-green layout the golden recordings use (``shop``/``web``)."""

from __future__ import annotations

from typing import Any

JsonObj = dict[str, Any]


def deployment(namespace: str, app: str, slot: str, image: str, replicas: int = 3, port: int = 8080) -> JsonObj:
    labels = {"app": app, "slot": slot}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": f"{app}-{slot}", "namespace": namespace, "labels": dict(labels)},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": dict(labels)},
            "template": {
                "metadata": {"labels": dict(labels)},
                "spec": {
                    "containers": [
                        {
                            "name": app,
                            "image": image,
                            "ports": [{"name": "http", "containerPort": port, "protocol": "TCP"}],
                            "readinessProbe": {
                                "httpGet": {"path": "/readyz", "port": port},
                                "periodSeconds": 2,
                            },
                        }
                    ]
                },
            },
        },
    }


def service(namespace: str, name: str, app: str, slot: str, port: int = 8080) -> JsonObj:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": namespace, "labels": {"app": app}},
        "spec": {
            "selector": {"app": app, "slot": slot},
            "ports": [{"name": "http", "port": 80, "targetPort": port, "protocol": "TCP"}],
        },
    }


def make_empty(deployment: JsonObj, replicas: int) -> JsonObj:
    """A slot as the charts install it with `firstDeploy=true`: 0 replicas, no version label, the image without a
    tag, and the annotation `releasegate.io/replicas` with the replica count a first deploy gives the app."""
    deployment["spec"]["replicas"] = 0
    for labels in (deployment["metadata"]["labels"], deployment["spec"]["template"]["metadata"]["labels"]):
        labels.pop("version", None)
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    container["image"] = container["image"].rsplit(":", 1)[0]
    deployment["metadata"].setdefault("annotations", {})["releasegate.io/replicas"] = str(replicas)
    return deployment


def blue_green_objects(
    namespace: str,
    app: str,
    live_slot: str,
    blue_image: str,
    green_image: str | None,
    replicas: int,
    port: int,
    empty: bool = False,
) -> list[JsonObj]:
    """With `empty`, `<app>-blue` runs no version (make_empty): the layout of a first deploy."""
    other = "green" if live_slot == "blue" else "blue"
    objects = [deployment(namespace, app, "blue", blue_image, replicas, port)]
    if empty:
        make_empty(objects[0], replicas)
    if green_image is not None:
        objects.append(deployment(namespace, app, "green", green_image, replicas, port))
    objects.append(service(namespace, app, app, live_slot, port))
    objects.append(service(namespace, f"{app}-preview", app, other, port))
    return objects


def canary_objects(namespace: str, app: str, image: str, replicas: int, port: int,
                   pod_spec: JsonObj | None = None, ingress: bool = False, empty: bool = False) -> list[JsonObj]:
    """charts/canary-app's layout: `<app>-stable` (`replicas`) and `<app>-canary` (0), Services `<app>` (both
    slots), `<app>-stable` and `<app>-canary`, and with `ingress` the ALB Ingress with all traffic on stable.
    With `empty`, both Deployments run no version (make_empty): the layout of a first deploy."""
    version = image.rsplit(":", 1)[1]
    objects: list[JsonObj] = []
    for slot, count in (("stable", replicas), ("canary", 0)):
        obj = deployment(namespace, app, slot, image, count, port)
        obj["metadata"]["labels"]["version"] = version
        obj["spec"]["template"]["metadata"]["labels"]["version"] = version
        obj["spec"]["template"]["spec"].update(pod_spec or {})
        objects.append(make_empty(obj, replicas) if empty else obj)
    for name, slot in ((app, None), (f"{app}-stable", "stable"), (f"{app}-canary", "canary")):
        obj = service(namespace, name, app, slot or "", port)
        if slot is None:
            obj["spec"]["selector"] = {"app": app}
        objects.append(obj)
    if ingress:
        action = ('{"Type":"forward","ForwardConfig":{"TargetGroups":['
                  f'{{"ServiceName":"{app}-canary","ServicePort":"80","Weight":0}},'
                  f'{{"ServiceName":"{app}-stable","ServicePort":"80","Weight":100}}]}}}}')
        objects.append({
            "apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
            "metadata": {"name": app, "namespace": namespace, "labels": {"app": app},
                         "annotations": {"alb.ingress.kubernetes.io/target-type": "ip",
                                         f"alb.ingress.kubernetes.io/actions.{app}": action}},
            "spec": {"ingressClassName": "alb", "rules": [{"http": {"paths": [{
                "path": "/", "pathType": "Prefix",
                "backend": {"service": {"name": app, "port": {"name": "use-annotation"}}}}]}}]}})
    return objects
