"""The compose override of the local stack: docker-compose.yml on images built on this machine.

deploy/render.py writes ``deploy/compose/local.yml`` with :func:`local_override` from the compose
project it renders, so the two cannot drift. With it, ``docker compose -f docker-compose.yml -f
deploy/compose/local.yml`` runs

- every OpenLFR service and the Kafka broker from the images scripts/images.sh builds
  (``localhost/...``, never pulled, never built by compose);
- the face models on Triton as in production (``OPENLFR_BACKEND=triton``, ``triton:8001``), its
  ``triton`` service (profile ``cpu`` in the main file) always on, from the Dockerfile's
  ``triton-cpu`` target (``localhost/openlfr/triton:VERSION-pytriton``: the nvidia-pytriton
  wheel's server, the models through its Python backend; NVIDIA's image cannot be pulled here),
  with the services that use it waiting for it healthy;
- the watchlist vectors in the embedded store (``OPENLFR_VECTOR_STORE=edge``, on the match volume)
  instead of on a Qdrant server, which has no image this machine can build;
- healthchecks without ``start_interval``, which compose refuses on podman's API, and as shell
  lines (podman 4.3's API splits a CMD check's arguments at spaces);
- Prometheus from Debian's package (``localhost/openlfr/prometheus:bookworm``);
- Qdrant and Grafana only under their profiles (``qdrant``, ``monitoring``), for a machine that
  can pull their images; ``triton-gpu`` stays under ``gpu``, on NVIDIA's image.

Compose reads the main file's ``${VAR:?}`` secrets before merging, so the env file must still
name OPENLFR_QDRANT_API_KEY and GRAFANA_ADMIN_PASSWORD (any value: nothing local reads them).
"""

from __future__ import annotations

import copy
import shlex
from typing import Any

import yaml

#: The comment deploy/render.py heads deploy/compose/local.yml with.
HEADER = (
    "The local stack: docker-compose.yml on the images scripts/images.sh builds here, the models on\n"
    "Triton from the nvidia-pytriton wheel (CPU), the embedded vector store; Prometheus from Debian;\n"
    "Qdrant and Grafana under profiles (deploy/render_local.py). Start: docker compose -f\n"
    "docker-compose.yml -f deploy/compose/local.yml --env-file deploy/compose/secrets.env up -d --wait\n"
    '(docs/operations.md, "Images with podman").'
)
#: Where the local images come from (scripts/images.sh tags them so).
LOCAL_REGISTRY = "localhost"
#: Settings that name a server the local stack does not run.
SERVER_ONLY_ENV = ("OPENLFR_QDRANT_URL", "OPENLFR_QDRANT_API_KEY")
#: The services without a locally built image, and the profile that brings each back.
PROFILED = {"qdrant": "qdrant", "grafana": "monitoring"}
#: Services whose local image is not the main file's name under localhost/: Prometheus from
#: Debian's package (scripts/images.sh), the version the monitoring tests run.
LOCAL_IMAGES = {"prometheus": "localhost/openlfr/prometheus:bookworm"}
#: The servers the local stack does without: the GPU Triton (the CPU one serves), Qdrant (the
#: embedded store replaces it).
REPLACED = ("triton-gpu", "qdrant")
#: The local Triton's health check: its image has no curl (the main file's check), python instead.
TRITON_CHECK = "python -c 'import urllib.request; urllib.request.urlopen(\"http://127.0.0.1:8000/v2/health/ready\", timeout=4)'"
#: /dev/shm of the local Triton: the Python backend passes every request's tensors through shared
#: memory (a region per model instance, grown on demand; an embedder batch of 64 chips is 17 MB),
#: and a container's default is 64 MB.
TRITON_SHM_SIZE = "512m"


class Reset:
    """Compose's ``!reset``: the key is removed from the merged service."""


class Override(dict):
    """Compose's ``!override``: the mapping replaces the main file's instead of merging into it."""


def register(dumper: type[yaml.SafeDumper]) -> None:
    """Teach ``dumper`` the two compose merge tags."""
    dumper.add_representer(Reset, lambda d, _value: d.represent_scalar("!reset", ""))
    dumper.add_representer(Override, lambda d, value: d.represent_mapping("!override", dict(value)))


def local_image(image: str) -> str:
    """``openlfr/openlfr:0.1.0`` -> ``localhost/openlfr/openlfr:0.1.0``."""
    return f"{LOCAL_REGISTRY}/{image}"


def local_triton_image(image: str) -> str:
    """``openlfr/triton:0.1.0-cpu`` (NVIDIA's base) -> ``localhost/openlfr/triton:0.1.0-pytriton``."""
    name, tag = image.rsplit(":", 1)
    return local_image(f"{name}:{tag.removesuffix('-cpu')}-pytriton")


def local_triton(service: dict[str, Any]) -> dict[str, Any]:
    """The main file's ``triton`` service (profile ``cpu``) on the image of target ``triton-cpu``."""
    return {
        "profiles": Reset(),
        "image": local_triton_image(service["image"]),
        "pull_policy": "never",
        "build": Reset(),
        "command": Reset(),  # the image's: python -m openlfr.inference.triton_exec ...
        "shm_size": TRITON_SHM_SIZE,
        "healthcheck": {"start_interval": Reset(), "test": ["CMD-SHELL", TRITON_CHECK]},
    }


def local_override(project: dict[str, Any]) -> dict[str, Any]:
    """The override document for the compose ``project`` (the main file's content)."""
    services: dict[str, Any] = {}
    for name, service in project["services"].items():
        if name in PROFILED:
            services[name] = {"profiles": [PROFILED[name]]}
            continue
        if name == "triton":
            services[name] = local_triton(service)
            continue
        if name in LOCAL_IMAGES:
            image = LOCAL_IMAGES[name]
        elif name.startswith("triton") or not service["image"].startswith("openlfr/"):
            continue  # Triton keeps its profiles and its images
        else:
            image = local_image(service["image"])
        entry: dict[str, Any] = {"image": image, "pull_policy": "never"}
        if "build" in service:
            entry["build"] = Reset()
        check = service.get("healthcheck", {})
        if check:
            entry["healthcheck"] = {}
        if "start_interval" in check:
            # Compose refuses it below Docker Engine 25's API, which podman 4.3's is
            # (scripts/podman-api.sh's ticker checks every 2 s while a container starts instead).
            entry["healthcheck"]["start_interval"] = Reset()
        if check.get("test", [""])[0] == "CMD":
            # podman 4.3's Docker API joins a CMD check's words and splits them again at spaces,
            # so `python -c "import a; b"` ran as `python -c import ...`: a shell line survives.
            entry["healthcheck"]["test"] = ["CMD-SHELL", shlex.join(check["test"][1:])]
        env = service.get("environment", {})
        if env.get("OPENLFR_VECTOR_STORE") == "qdrant":
            local_env = {key: value for key, value in env.items() if key not in SERVER_ONLY_ENV}
            local_env["OPENLFR_VECTOR_STORE"] = "edge"
            local_env["OPENLFR_QDRANT_PATH"] = "/data/vectors"
            entry["environment"] = Override(local_env)
        depends = service.get("depends_on", {})
        if any(peer in depends for peer in REPLACED):
            kept = {peer: copy.deepcopy(rule) for peer, rule in depends.items() if peer not in REPLACED}
            if "triton" in kept:
                # Required here: the main file's `required: false` is for a stack on either Triton.
                kept["triton"].pop("required", None)
            entry["depends_on"] = Override(kept)
        services[name] = entry
    return {"services": services}
