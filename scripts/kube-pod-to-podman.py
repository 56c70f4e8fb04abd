#!/usr/bin/env python3
"""Turns the rendered Kubernetes manifests' hako pod into a `podman run` command line.

    kube-pod-to-podman.py RENDERED.yaml OUT_DIR --repo REPO [--seen-as DIR] [--pod-name NAME]

Reads the Deployment's pod template and writes OUT_DIR/args (one podman argument per line,
before the image) and OUT_DIR/cmd (the container's arguments, one per line), plus each
ConfigMap volume's files under OUT_DIR/volumes/<volume>/ (named in the arguments as under
--seen-as, where podman will find OUT_DIR). What it maps, and how:

- hostUsers: false             --userns auto:size=65536 (a user namespace of its own, as the
                               kubelet gives a pod; 65536 ids, what Kubernetes maps)
- securityContext              --cap-drop/--cap-add, --read-only, --user,
                               no-new-privileges (allowPrivilegeEscalation: false),
                               unmask=/proc/* (procMount: Unmasked), the Localhost seccomp
                               profile from REPO/deploy/seccomp/
- resources.limits             --memory, --cpus
- env                          values; secretKeyRef is left to the caller (-e at run time);
                               fieldRef metadata.name is the pod's name
- volumeMounts                 ConfigMaps: read-only binds of their files; emptyDir: a tmpfs
                               of its sizeLimit

Anything else in the container spec that would change what runs (another volume kind, a
command, a security setting not listed) is refused, so that the podman run stays the
manifest's.
"""
import argparse
import os
import sys

import yaml

KNOWN_CONTAINER_KEYS = {
    "args", "env", "image", "imagePullPolicy", "livenessProbe", "name", "ports",
    "readinessProbe", "resources", "securityContext", "startupProbe", "volumeMounts",
}
KNOWN_SECURITY_KEYS = {
    "allowPrivilegeEscalation", "capabilities", "privileged", "procMount",
    "readOnlyRootFilesystem", "runAsNonRoot", "runAsUser",
}


def fail(message):
    sys.exit(f"kube-pod-to-podman: {message}")


def quantity_bytes(text):
    units = {"Ki": 1 << 10, "Mi": 1 << 20, "Gi": 1 << 30, "K": 10**3, "M": 10**6, "G": 10**9}
    for suffix, factor in units.items():
        if text.endswith(suffix):
            return int(float(text[: -len(suffix)]) * factor)
    return int(text)


def cpus(text):
    return str(int(text[:-1]) / 1000) if text.endswith("m") else str(float(text))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("rendered")
    parser.add_argument("out")
    parser.add_argument("--repo", required=True)
    parser.add_argument("--seen-as", help="OUT_DIR's path where podman runs")
    parser.add_argument("--pod-name", default="hako-0")
    args = parser.parse_args()

    docs = [d for d in yaml.safe_load_all(open(args.rendered)) if d]
    deployments = [d for d in docs if d["kind"] == "Deployment"]
    if len(deployments) != 1:
        fail(f"expected one Deployment, found {len(deployments)}")
    config_maps = {d["metadata"]["name"]: d for d in docs if d["kind"] == "ConfigMap"}
    pod = deployments[0]["spec"]["template"]["spec"]
    if len(pod["containers"]) != 1:
        fail("expected one container")
    container = pod["containers"][0]
    unknown = set(container) - KNOWN_CONTAINER_KEYS
    if unknown:
        fail(f"container keys this translation does not know: {sorted(unknown)}")

    run = []
    if pod.get("hostUsers") is False:
        run += ["--userns", "auto:size=65536"]
    profile = (pod.get("securityContext") or {}).get("seccompProfile") or {}
    if profile.get("type") == "Localhost":
        name = os.path.basename(profile["localhostProfile"])
        run += ["--security-opt", f"seccomp={args.repo}/deploy/seccomp/{name}"]
    elif profile:
        fail(f"seccomp profile type {profile.get('type')} is not handled")

    security = container.get("securityContext") or {}
    unknown = set(security) - KNOWN_SECURITY_KEYS
    if unknown:
        fail(f"securityContext keys this translation does not know: {sorted(unknown)}")
    if security.get("privileged"):
        fail("a privileged container")
    if security.get("allowPrivilegeEscalation") is False:
        run += ["--security-opt", "no-new-privileges"]
    if security.get("procMount") == "Unmasked":
        run += ["--security-opt", "unmask=/proc/*"]
    if security.get("readOnlyRootFilesystem"):
        run += ["--read-only"]
    if "runAsUser" in security:
        run += ["--user", str(security["runAsUser"])]
    caps = security.get("capabilities") or {}
    for cap in caps.get("drop", []):
        run += ["--cap-drop", cap]
    for cap in caps.get("add", []):
        run += ["--cap-add", cap]

    limits = (container.get("resources") or {}).get("limits") or {}
    if "memory" in limits:
        run += ["--memory", str(quantity_bytes(limits["memory"]))]
    if "cpu" in limits:
        run += ["--cpus", cpus(str(limits["cpu"]))]

    for env in container.get("env", []):
        if "value" in env:
            run += ["-e", f"{env['name']}={env['value']}"]
        elif env.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") == "metadata.name":
            run += ["-e", f"{env['name']}={args.pod_name}"]
        elif "secretKeyRef" in env.get("valueFrom", {}):
            continue
        else:
            fail(f"env {env['name']}: source not handled")

    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    for mount in container.get("volumeMounts", []):
        volume = volumes[mount["name"]]
        target = mount["mountPath"]
        if "configMap" in volume:
            data = config_maps[volume["configMap"]["name"]]["data"]
            where = os.path.join(args.out, "volumes", mount["name"])
            os.makedirs(where, exist_ok=True)
            for key, text in data.items():
                with open(os.path.join(where, key), "w") as f:
                    f.write(text)
            mode = "ro" if mount.get("readOnly") else "rw"
            seen = os.path.join(args.seen_as or args.out, "volumes", mount["name"])
            run += ["-v", f"{seen}:{target}:{mode}"]
        elif "emptyDir" in volume:
            size = volume["emptyDir"].get("sizeLimit")
            options = f"size={quantity_bytes(size)}" if size else ""
            run += ["--tmpfs", f"{target}:{options}" if options else target]
        else:
            fail(f"volume {mount['name']}: kind not handled")

    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "args"), "w") as f:
        f.write("\n".join(run) + "\n")
    with open(os.path.join(args.out, "cmd"), "w") as f:
        f.write("\n".join(container.get("args", [])) + "\n")


if __name__ == "__main__":
    main()
